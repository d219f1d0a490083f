"""Reading the CSV tables dataset adapters index, so every refusal can name the file and line.

Every adapter that reads a CSV (csv, isic2019, aptos2019, chexpert, cbis_ddsm) goes through
`read_csv_table`: UTF-8 text (a byte-order mark is accepted; anything else that is not UTF-8 is
refused naming the line and byte), a header that must hold the required columns once each, and
records whose field count matches the header (a truncated line or an unquoted comma would
otherwise shift values into the wrong columns). Each record keeps the line it starts on, so
multi-line quoted fields still report the right line.
"""

import csv
import io
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from medprobe.cache.errors import ToolkitError

# Texts that mean "no value" in a label column: pandas' default missing-value markers, which is
# what a spreadsheet or `DataFrame.to_csv` writes for a missing label.
MISSING_VALUES = frozenset(
    {
        "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
        "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
    }
)  # fmt: skip
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


@dataclass(frozen=True)
class CsvTable:
    """A CSV file's records as {column: text} (values stripped), with the line each starts on."""

    path: Path
    columns: tuple[str, ...]
    records: tuple[dict[str, str], ...]
    lines: tuple[int, ...]

    def __iter__(self) -> Iterator[tuple[int, dict[str, str]]]:
        """(line, record) pairs in file order."""
        return iter(zip(self.lines, self.records, strict=True))

    def __len__(self) -> int:
        return len(self.records)

    def place(self, line: int) -> str:
        """`<file>, line N`: how every message points at a record."""
        return f"{self.path}, line {line}"

    def places(self) -> list[str]:
        """`place` of every record, in file order."""
        return [self.place(line) for line in self.lines]

    def column(self, name: str) -> list[str]:
        return [record[name] for record in self.records]


def decode_utf8(path: Path, data: bytes) -> str:
    """`data` as text; a UTF-8 byte-order mark is dropped, and bytes that are not UTF-8 are
    refused naming the line and the byte (a Latin-1 or Windows-1252 export, typically)."""
    if data.startswith(UTF16_BOMS):
        raise ToolkitError(
            f"{path}: UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8 "
            "(e.g. `iconv -f utf-16 -t utf-8`)"
        )
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise ToolkitError(
            f"{path}, line {line}: a NUL byte; this is not a text CSV "
            "(a binary file, or UTF-16 without a byte-order mark?)"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise ToolkitError(
            f"{path}, line {line}: byte 0x{data[error.start]:02x} at column {column} is not "
            "UTF-8 (a Latin-1 or Windows-1252 export?); save the file as UTF-8, e.g. "
            f"`iconv -f latin1 -t utf-8 {path.name} > fixed.csv`"
        ) from None


def read_csv_table(path: Path, required: Sequence[str]) -> CsvTable:
    """The records of the CSV file `path`, whose header must name every `required` column.

    Header names are stripped of surrounding spaces; a required column named twice, a record with
    more non-empty or fewer fields than the header, a NUL byte or text that is not UTF-8 is an
    error naming the file and line.
    """
    if not path.is_file():
        raise ToolkitError(f"{path} does not exist")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ToolkitError(f"{path}: cannot read ({error.strerror})") from error
    reader = csv.reader(io.StringIO(decode_utf8(path, data), newline=""))
    header: list[str] | None = None
    records: list[dict[str, str]] = []
    lines: list[int] = []
    try:
        while True:
            line = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            if not any(f.strip() for f in fields):
                continue  # blank lines carry nothing
            if header is None:
                header = [f.strip() for f in fields]
                _check_header(path, header, required)
                continue
            if len(fields) < len(header) or any(f.strip() for f in fields[len(header) :]):
                raise ToolkitError(
                    f"{path}, line {line}: {len(fields)} fields but the header has "
                    f"{len(header)} (a truncated line, or a value with an unquoted comma?)"
                )
            records.append({c: v.strip() for c, v in zip(header, fields, strict=False)})
            lines.append(line)
    except csv.Error as error:
        raise ToolkitError(
            f"{path}, line {reader.line_num}: not a readable CSV ({error})"
        ) from None
    if header is None:
        raise ToolkitError(f"{path} is empty; expected a header with {list(required)}")
    return CsvTable(path, tuple(header), tuple(records), tuple(lines))


def _check_header(path: Path, header: list[str], required: Sequence[str]) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        raise ToolkitError(f"{path}: missing column(s) {missing}; header is {header}")
    twice = sorted({c for c in required if header.count(c) > 1})
    if twice:
        raise ToolkitError(f"{path}: header names column(s) {twice} more than once")


def refuse_duplicates(keys: Sequence[Hashable], places: Sequence[str], what: str) -> None:
    """Stop at the first key listed twice, naming both places (`<file>, line N`)."""
    first_place: dict[Hashable, str] = {}
    for key, place in zip(keys, places, strict=True):
        if key in first_place:
            raise ToolkitError(
                f"{what} {key} is listed twice: {first_place[key]} and {place}; "
                "remove one of the two lines"
            )
        first_place[key] = place


def check_files_match(listed: set[str], image_dir: Path, suffix: str, table: Path) -> None:
    """Every listed image (by file stem) exists in `image_dir` and every image there is listed."""
    present = {p.stem for p in image_dir.glob(f"*{suffix}")}
    absent, unlisted = sorted(listed - present), sorted(present - listed)
    if absent:
        raise ToolkitError(
            f"{len(absent)} image(s) listed in {table} are not in {image_dir}: {absent[:5]}"
        )
    if unlisted:
        raise ToolkitError(
            f"{len(unlisted)} image(s) in {image_dir} are not listed in {table}: {unlisted[:5]}"
        )
