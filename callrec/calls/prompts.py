"""The installed notice prompts: ``<prompts_dir>/<lang>/<name>.wav``.

Read once at start and again on SIGHUP (``Daemon.reload_prompts``), so the sha256 that goes into
each call's evidence costs nothing on the caller's path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import soundfile

from callrec.calls.session import Prompt
from callrec.recording.files import sha256_file

log = logging.getLogger("callrec.calls.prompts")


class PromptError(Exception):
    pass


@dataclass
class PromptCatalog:
    prompts: dict[tuple[str, str], Prompt]

    @classmethod
    def load(cls, asterisk_dir: str, local_dir: Path) -> PromptCatalog:
        """Scan ``local_dir`` (the daemon's view) and describe each file as Asterisk will see it."""
        if not local_dir.is_dir():
            raise PromptError(f"notice.prompts_dir: folder {local_dir} does not exist (run `callrec sounds install`)")
        prompts: dict[tuple[str, str], Prompt] = {}
        base = asterisk_dir.rstrip("/")
        for wav in sorted(local_dir.glob("*/*.wav")):
            lang, name = wav.parent.name, wav.stem
            try:
                info = soundfile.info(str(wav))
            except (RuntimeError, soundfile.LibsndfileError) as exc:
                log.warning("prompt %s ignored: not a readable WAV (%s)", wav, exc)
                continue
            digest = sha256_file(wav)[0]
            prompts[(lang, name)] = Prompt(
                name=name,
                language=lang,
                media=f"sound:{base}/{lang}/{name}",
                file=f"{base}/{lang}/{name}.wav",
                sha256=digest,
                duration=round(info.frames / info.samplerate, 3),
            )
        return cls(prompts)

    @cached_property
    def _available(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for lang, name in self.prompts:
            out.setdefault(lang, set()).add(name)
        return out

    def available(self) -> dict[str, set[str]]:
        """Language -> installed prompt names (worked out once per catalog: policy asks per call)."""
        return self._available

    def get(self, language: str, name: str) -> Prompt | None:
        return self.prompts.get((language, name))

    def require(self, language: str, names: list[str]) -> None:
        missing = [n for n in names if (language, n) not in self.prompts]
        if missing:
            raise PromptError(
                f"notice.default_language: prompts missing for {language!r}: {', '.join(missing)} "
                "(run `callrec sounds install`)"
            )
