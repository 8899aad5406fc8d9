#!/usr/bin/env bash
# Build the callrec recording-notice prompts from their text with Festival TTS.
#
#   sounds/<lang>/<name>.txt  (UTF-8 text)  ->  sounds/<lang>/<name>.wav
#
# Output: 8000 Hz, 16-bit signed PCM, mono WAV, peak normalised to -3 dBFS,
# leading/trailing silence trimmed to 0.2 s. The build is deterministic (no
# dither, no timestamps), so re-running it gives byte-identical files.
# Checksums of all WAVs are written to sounds/SHA256SUMS.
#
# Usage: sounds/make_prompts.sh [--install-deps] [--check | --sums-only]
#   (no option)      synthesise every prompt and rewrite SHA256SUMS
#   --install-deps   first apt-get install festival, voices and sox
#   --check          only verify the WAVs against SHA256SUMS (no synthesis)
#   --sums-only      only rewrite SHA256SUMS from the WAVs as they are
#                    (after replacing prompts with studio recordings)
set -euo pipefail

SOUNDS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUMS_FILE="SHA256SUMS"
PROMPTS=(notice notice-opt-out notice-opt-in not-recorded)
DEB_PACKAGES=(festival festvox-ru festvox-us-slt-hts sox)

RATE=8000           # Hz
PEAK_DB=-3          # normalise peak to this level (dBFS)
PAD_S=0.2           # silence kept before and after the speech (s)
SILENCE_DB=-55d     # below this level counts as silence when trimming
SILENCE_MIN_S=0.01  # this much sound ends the trimming

# Festival voice per language folder. Add a line here for a new language.
voice_for() {
    case "$1" in
        en) echo voice_cmu_us_slt_arctic_hts ;;  # Debian package festvox-us-slt-hts
        ru) echo voice_msu_ru_nsh_clunits ;;     # Debian package festvox-ru (UTF-8 text)
        *) return 1 ;;
    esac
}

usage() {
    # Print the "Usage:" block of the header comment above.
    awk '/^# Usage:/ {on = 1} on && !/^#/ {exit} on {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"
}

die() {
    echo "make_prompts: $*" >&2
    exit 1
}

install_deps=0
mode=build
for arg in "$@"; do
    case "$arg" in
        --install-deps) install_deps=1 ;;
        --check) mode=check ;;
        --sums-only) mode=sums ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $arg" ;;
    esac
done

export LC_ALL=C.UTF-8
cd "$SOUNDS_DIR"

# All WAV paths relative to sounds/, in a fixed (byte) order.
list_wavs() {
    find . -mindepth 2 -maxdepth 2 -name '*.wav' -printf '%P\n' | LC_ALL=C sort
}

write_sums() {
    local wavs
    mapfile -t wavs < <(list_wavs)
    [ "${#wavs[@]}" -gt 0 ] || die "no WAV files under $SOUNDS_DIR"
    sha256sum -- "${wavs[@]}" > "$SUMS_FILE.tmp"
    mv -f "$SUMS_FILE.tmp" "$SUMS_FILE"
    echo "wrote $SUMS_FILE (${#wavs[@]} files)"
}

if [ "$mode" = check ]; then
    [ -f "$SUMS_FILE" ] || die "$SUMS_FILE missing"
    sha256sum --check --strict --quiet "$SUMS_FILE" || die "WAVs do not match $SUMS_FILE"
    # Every WAV present must also be listed.
    missing=0
    while IFS= read -r wav; do
        if ! cut -d' ' -f3- "$SUMS_FILE" | grep -qxF -- "$wav"; then
            echo "make_prompts: $wav is not listed in $SUMS_FILE" >&2
            missing=1
        fi
    done < <(list_wavs)
    [ "$missing" -eq 0 ] || exit 1
    echo "OK: all WAVs match $SUMS_FILE"
    exit 0
fi

if [ "$mode" = sums ]; then
    write_sums
    exit 0
fi

if [ "$install_deps" -eq 1 ]; then
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update
    "${sudo[@]}" apt-get install -y "${DEB_PACKAGES[@]}"
fi

for tool in text2wave sox sha256sum; do
    command -v "$tool" >/dev/null \
        || die "$tool not found; run with --install-deps (Debian packages: ${DEB_PACKAGES[*]})"
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

mapfile -t texts < <(find . -mindepth 2 -maxdepth 2 -name '*.txt' -printf '%P\n' | LC_ALL=C sort)
[ "${#texts[@]}" -gt 0 ] || die "no <lang>/<name>.txt files under $SOUNDS_DIR"

# Fail before synthesising anything if a language has no voice.
for txt in "${texts[@]}"; do
    voice_for "${txt%%/*}" >/dev/null \
        || die "no Festival voice configured for language '${txt%%/*}' (edit voice_for in $0)"
done

for txt in "${texts[@]}"; do
    lang="${txt%%/*}"
    wav="${txt%.txt}.wav"
    voice="$(voice_for "$lang")"

    raw="$tmp/raw.wav"
    rm -f "$raw"
    # text2wave reads the text file; the voice is selected before synthesis.
    text2wave -eval "($voice)" -o "$raw" "$txt" >"$tmp/festival.log" 2>&1 || {
        cat "$tmp/festival.log" >&2
        die "text2wave failed for $txt"
    }
    if [ ! -s "$raw" ] || grep -q 'SIOD ERROR' "$tmp/festival.log"; then
        cat "$tmp/festival.log" >&2
        die "text2wave produced no audio for $txt (voice $voice installed?)"
    fi

    # -D: no dither and -R: fixed random seed, so the output is reproducible.
    # Trim silence at both ends (the reverse trick trims the end), pad to
    # PAD_S, resample, then normalise the peak at the final rate.
    sox -D -R -V1 "$raw" -t wav -e signed-integer -b 16 -c 1 "$tmp/out.wav" \
        silence 1 "$SILENCE_MIN_S" "$SILENCE_DB" \
        reverse silence 1 "$SILENCE_MIN_S" "$SILENCE_DB" reverse \
        pad "$PAD_S" "$PAD_S" \
        rate -v "$RATE" \
        norm "$PEAK_DB"
    mv -f "$tmp/out.wav" "$wav"
    printf '%-28s %6.2f s  (%s)\n' "$wav" "$(soxi -D "$wav")" "$voice"
done

# Warn about prompts missing from a language folder.
for dir in */; do
    lang="${dir%/}"
    for name in "${PROMPTS[@]}"; do
        [ -f "$lang/$name.txt" ] || echo "make_prompts: warning: $lang/$name.txt missing" >&2
    done
done

write_sums
