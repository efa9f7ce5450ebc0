"""An LJSpeech-style folder's metadata: its file, its rows, the WAV each row names. Free of torch, so the
search's checks of a data folder answer before the model loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tts_model.errors import DataError

METADATA_NAMES = ("metadata.csv", "metadata_train.csv", "metadata_eval.csv")


@dataclass(frozen=True, slots=True)
class MetadataRow:
    id: str
    text: str
    normalized_text: str
    line: int  # 1-based line number in the metadata file, for error messages


def metadata_path(folder: Path) -> Path:
    """`metadata.csv`, else the seed's `metadata_train.csv` or `metadata_eval.csv` (whichever is alone)."""
    if not folder.is_dir():
        raise DataError(
            f"{folder}: data folder not found; pass an LJSpeech-style folder (metadata.csv + wavs/)"
        )
    if (folder / METADATA_NAMES[0]).is_file():
        return folder / METADATA_NAMES[0]
    found = [folder / name for name in METADATA_NAMES[1:] if (folder / name).is_file()]
    if len(found) == 1:
        return found[0]
    if found:
        raise DataError(
            f"{folder}: holds both metadata_train.csv and metadata_eval.csv; put each split in its own folder "
            "or add a metadata.csv"
        )
    raise DataError(f"{folder}: no metadata file; expected one of {', '.join(METADATA_NAMES)}")


def read_metadata(folder: Path) -> list[MetadataRow]:
    """Rows of `id|text` or `id|text|normalized_text`; a 2-field line's text is its own normalised form."""
    path = metadata_path(folder)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); re-save the file as UTF-8") from exc
    rows: list[MetadataRow] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        fields = raw.split("|")
        if len(fields) not in (2, 3):
            raise DataError(
                f"{where}: expected 2 or 3 '|'-separated fields (id|text|normalized_text), found {len(fields)}"
            )
        uid, text = fields[0].strip(), fields[1].strip()
        normalized = fields[2].strip() if len(fields) == 3 else ""
        if not uid:
            raise DataError(f"{where}: empty id; the first field names the WAV (wavs/<id>.wav)")
        if uid in first_line:
            raise DataError(f"{where}: id {uid!r} already used on line {first_line[uid]}; ids must be unique")
        if not text and not normalized:
            raise DataError(f"{where}: empty text for id {uid!r}; write the transcript or drop the line")
        first_line[uid] = number
        rows.append(MetadataRow(uid, text or normalized, normalized or text, number))
    if not rows:
        raise DataError(f"{path}: metadata file has no lines; add `id|text` lines")
    return rows


def wav_paths(folder: Path, meta: Path, rows: list[MetadataRow]) -> list[Path]:
    paths = []
    for row in rows:
        wav = folder / "wavs" / f"{row.id}.wav"
        if not wav.is_file():
            raise DataError(
                f"{meta}:{row.line}: audio for id {row.id!r} not found at {wav}; add it or drop the line"
            )
        paths.append(wav)
    return paths
