#!/usr/bin/env python3
"""The house's size limits, checked: no function in src/ over 100 lines, no file in src/
over 500 lines of code (blank lines, comments and each inline `#[cfg(test)] mod … { … }`
block left out; a `#[cfg(test)]` on a single item is counted like any code), src/pipeline.rs
at most 400 lines in all. Prints the largest of each, then every limit passed; exits 1 if
one is.

Functions are found by rustfmt's layout: a line that starts a `fn` item, and the first
later line at the same indent that closes it with `}`.
"""
import pathlib
import re
import sys

MAX_FN, MAX_FILE, MAX_PIPELINE = 100, 500, 400
FN = re.compile(r"^(\s*)(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")
TEST_MOD = re.compile(r"^(\s*)(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{\s*$")


def test_module_end(lines, i):
    """If line `i` is a `#[cfg(test)]` on an inline module (`mod tests {`, other
    attributes between them allowed), the index of the line that closes it: the first
    later `}` at the module's indent. Otherwise None: a `#[cfg(test)]` on one item, or on
    `mod tests;` (its own file), leaves the count going."""
    if lines[i].strip() != "#[cfg(test)]":
        return None
    j = i + 1
    while j < len(lines) and lines[j].strip().startswith("#["):
        j += 1
    match = TEST_MOD.match(lines[j]) if j < len(lines) else None
    if not match:
        return None
    for k in range(j + 1, len(lines)):
        if lines[k].rstrip() == match.group(1) + "}":
            return k
    return len(lines) - 1


def code_lines(lines):
    """Lines of code, inline test modules left out: not blank, not only a comment."""
    count, i = 0, 0
    while i < len(lines):
        end = test_module_end(lines, i)
        if end is not None:
            i = end + 1
            continue
        text = lines[i].strip()
        if text and not text.startswith("//"):
            count += 1
        i += 1
    return count


def functions(lines):
    """(name, first line, length) of each function with a body."""
    for i, line in enumerate(lines):
        match = FN.match(line)
        if not match or line.rstrip().endswith(";"):
            continue
        indent = match.group(1)
        for j in range(i, len(lines)):
            if lines[j].rstrip() == indent + "}" or (
                j == i and line.rstrip().endswith("}")
            ):
                yield match.group(7), i + 1, j - i + 1
                break


def main():
    root = pathlib.Path(__file__).resolve().parent.parent
    over, fns, files = [], [], []
    for path in sorted((root / "src").rglob("*.rs")):
        lines = path.read_text().splitlines()
        name = path.relative_to(root)
        files.append((code_lines(lines), str(name)))
        if files[-1][0] > MAX_FILE:
            over.append(f"{name}: {files[-1][0]} lines of code (at most {MAX_FILE})")
        for fn, at, length in functions(lines):
            fns.append((length, f"{name}:{at} {fn}"))
            if length > MAX_FN:
                over.append(f"{name}:{at}: fn {fn} is {length} lines (at most {MAX_FN})")
        if name.as_posix() == "src/pipeline.rs" and len(lines) > MAX_PIPELINE:
            over.append(f"{name}: {len(lines)} lines (at most {MAX_PIPELINE})")
    print("largest files (lines of code):", ", ".join(f"{f} {n}" for n, f in sorted(files)[-3:]))
    print("longest functions (lines):", ", ".join(f"{f} {n}" for n, f in sorted(fns)[-3:]))
    for problem in over:
        print(problem, file=sys.stderr)
    if over:
        sys.exit(1)
    print("sizes: every limit holds")


if __name__ == "__main__":
    main()
