#!/usr/bin/env bash
# Regenerates the speech engine's test audio (tests/e2e/test_speech_engine.py, benchmarks/speech_bench.py):
# Festival speech from Debian (festvox-us-slt-hts for English, festvox-ru for Russian), cut to the voice,
# band-limited to the phone's 300-3400 Hz, 8 kHz 16-bit as MixMonitor writes, laid out at known offsets.
# layout.json records every utterance: file, channel, speaker, start and end (seconds), text, keywords.
#
#   apt-get install festival festvox-us-slt-hts festvox-ru sox
#   tests/data/speech/make.sh
#
# Files: en.wav, ru.wav (mono, two sentences each), stereo.wav (a short call: caller left, agent right,
# with one overlap), silence.wav (4 s of faint pink noise, nobody speaking).
set -euo pipefail
cd "$(dirname "$0")"
for tool in text2wave sox soxi python3; do
  command -v "$tool" >/dev/null || { echo "make.sh: $tool missing (apt-get install festival sox)" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
FORMAT=(-r 8000 -c 1 -b 16 -e signed-integer)

# say NAME VOICE TEXT: one utterance, trimmed to the voice, 8 kHz phone band.
say() {
  printf '%s\n' "$3" > "$work/$1.txt"
  text2wave -eval "($2)" -o "$work/$1.raw.wav" "$work/$1.txt"
  sox "$work/$1.raw.wav" "${FORMAT[@]}" "$work/$1.wav" sinc 300-3400 \
    silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse
  printf '%s\t%s\n' "$1" "$3" >> "$work/texts.tsv"
}
len() { soxi -D "$work/$1.wav"; }
# track OUT TOTAL NAME@START ...: a mono track of TOTAL seconds with each utterance at its start.
track() {
  local out=$1 total=$2; shift 2
  sox -n "${FORMAT[@]}" "$work/$out.wav" trim 0 "$total"
  for item in "$@"; do
    local name=${item%@*} start=${item#*@}
    sox "$work/$name.wav" "$work/pad.wav" pad "$start" 0
    sox -m "$work/$out.wav" "$work/pad.wav" "$work/mix.wav" trim 0 "$total"
    mv "$work/mix.wav" "$work/$out.wav"
  done
}
EN=voice_cmu_us_slt_arctic_hts
RU=voice_msu_ru_nsh_clunits
say en1 $EN "Hello, I would like a refund for my order."
say en2 $EN "The parcel arrived damaged yesterday."
say ru1 $RU "Добрый день, я хочу расторгнуть договор."
say ru2 $RU "Верните мне деньги, пожалуйста."
say c1 $EN "Hello, I am calling about my invoice."
say a1 $EN "Thank you for calling, let me check your account."
say c2 $EN "The amount on it is wrong."
say a2 $EN "I see the problem now."

calc() { python3 -c "print(round($1, 3))"; }
: > "$work/layout.tsv"
# Mono: 0.8 s of silence, a sentence, 1 s, a sentence, 0.7 s.
for lang in en ru; do
  s1=0.8; s2=$(calc "$s1 + $(len ${lang}1) + 1.0"); total=$(calc "$s2 + $(len ${lang}2) + 0.7")
  track "$lang" "$total" "${lang}1@$s1" "${lang}2@$s2"
  cp "$work/$lang.wav" "$lang.wav"
  printf '%s\t0\tmixed\t%s\t%s\t%s\n' "$lang.wav" "$s1" "$(calc "$s1 + $(len ${lang}1)")" "${lang}1" >> "$work/layout.tsv"
  printf '%s\t0\tmixed\t%s\t%s\t%s\n' "$lang.wav" "$s2" "$(calc "$s2 + $(len ${lang}2)")" "${lang}2" >> "$work/layout.tsv"
done
# Stereo: caller, agent, caller, and the agent starting 0.8 s before the caller ends (overtalk).
c1=0.5; a1=$(calc "$c1 + $(len c1) + 0.6"); c2=$(calc "$a1 + $(len a1) + 0.6"); a2=$(calc "$c2 + $(len c2) - 0.8")
total=$(calc "$a2 + $(len a2) + 0.8")
track left "$total" "c1@$c1" "c2@$c2"
track right "$total" "a1@$a1" "a2@$a2"
sox -M "$work/left.wav" "$work/right.wav" -b 16 stereo.wav
for u in "c1 0 caller $c1" "a1 1 agent $a1" "c2 0 caller $c2" "a2 1 agent $a2"; do
  set -- $u
  printf 'stereo.wav\t%s\t%s\t%s\t%s\t%s\n' "$2" "$3" "$4" "$(calc "$4 + $(len $1)")" "$1" >> "$work/layout.tsv"
done
# Nobody speaking: faint pink noise (about -50 dBFS), the same every time (-R).
sox -R -n "${FORMAT[@]}" silence.wav synth 4 pinknoise vol 0.01

python3 - "$work/layout.tsv" "$work/texts.tsv" <<'PY'
import json, sys
texts = dict(line.rstrip("\n").split("\t", 1) for line in open(sys.argv[2], encoding="utf-8"))
layout = {}
for line in open(sys.argv[1], encoding="utf-8"):
    file, channel, speaker, start, end, name = line.rstrip("\n").split("\t")
    layout.setdefault(file, []).append({"channel": int(channel), "speaker": speaker, "start": float(start),
                                        "end": float(end), "text": texts[name]})
layout["silence.wav"] = []
with open("layout.json", "w", encoding="utf-8") as fh:
    json.dump(layout, fh, ensure_ascii=False, indent=1)
    fh.write("\n")
PY
soxi -D en.wav ru.wav stereo.wav silence.wav | paste - - - - | sed 's/^/durations: /'
du -ch en.wav ru.wav stereo.wav silence.wav | tail -1
