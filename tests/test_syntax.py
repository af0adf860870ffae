"""Stage 1, syntax validation: checkers, discovery, the parallel runner and `stagecheck check-syntax`."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from cli.commands import check_syntax
from stagecheck.syntax import (
    RUNNING_VERSION,
    SyntaxFinding,
    UnsupportedTargetVersion,
    check_json_text,
    check_python_source,
    check_repository,
    check_toml_text,
    check_yaml_text,
    find_conflict_markers,
    parse_target_version,
)
from stagecheck.syntax.discovery import discover
from stagecheck.syntax.ignore import IgnoreSet, PathFilter, is_ignored, parse_ignore_file
from stagecheck.syntax.runner import check_items

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def positions(findings: list[SyntaxFinding] | tuple[SyntaxFinding, ...]) -> list[str]:
    return [f"{f.path}:{f.line}:{f.col}:{f.kind}" for f in findings]


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def git_init(root: Path) -> None:
    subprocess.run(["git", "init", "-q", str(root)], check=True, capture_output=True)


# ----------------------------------------------------------------------------------------- Python


def test_python2_print_is_a_syntax_error_at_its_position() -> None:
    [finding] = check_python_source(b"import os\n\nprint 'hello'\n", "app/main.py")
    assert (finding.path, finding.line, finding.col, finding.kind) == ("app/main.py", 3, 1, "python")
    assert "Missing parentheses in call to 'print'" in finding.message
    assert str(finding) == f"app/main.py:3:1: {finding.message}"


def test_indentation_and_tab_errors_are_reported_with_their_class() -> None:
    [indent] = check_python_source(b"def f():\nreturn 1\n", "a.py")
    assert (indent.line, indent.col) == (2, 1) and indent.message.startswith("IndentationError:")
    [tab] = check_python_source(b"if True:\n\tx = 1\n        y = 2\n", "b.py")
    assert tab.line == 3 and tab.message.startswith("TabError:")


def test_columns_count_characters_not_bytes() -> None:
    # Parser error: `(1 2)` -> CPython points at `1`, character column 17 (byte column 20).
    [parse] = check_python_source('x = "ééé"; y = (1 2)\n'.encode(), "a.py")
    assert (parse.line, parse.col) == (1, 17)
    # Compiler-phase error (reported in UTF-8 bytes by CPython): `return` is character 10.
    [compiled] = check_python_source('x = "é"; return 1\n'.encode(), "b.py")
    assert (compiled.line, compiled.col) == (1, 10) and "'return' outside function" in compiled.message


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"def f():\n    pass\nbreak\n", "'break' outside loop"),
        (b"def f(a, b, a):\n    pass\n", "duplicate argument 'a'"),
        (b"nonlocal x\n", "nonlocal declaration not allowed at module level"),
    ],
)
def test_errors_only_the_compiler_sees_are_caught(source: bytes, message: str) -> None:
    [finding] = check_python_source(source, "a.py")
    assert message in finding.message and finding.kind == "python"


def test_encoding_problems_are_their_own_kind() -> None:
    [nul] = check_python_source(b"x = 1\ny = 2\x00\n", "nul.py")
    assert positions([nul]) == ["nul.py:2:6:encoding"]
    [utf8] = check_python_source(b'x = 1\ny = "\xff"\n', "bad.py")
    assert positions([utf8]) == ["bad.py:2:6:encoding"] and "0xff" in utf8.message
    [cookie] = check_python_source(b"#!/usr/bin/env python\n# -*- coding: klingon -*-\nx = 1\n", "c.py")
    assert positions([cookie]) == ["c.py:2:1:encoding"] and "klingon" in cookie.message
    assert check_python_source('# coding: latin-1\ns = "é"\n'.encode("latin-1"), "ok.py") == []
    assert check_python_source(b'\xef\xbb\xbfs = "\xc3\xa9"\n', "bom.py") == []


def test_warnings_are_not_findings_and_do_not_escape_even_under_error_filters() -> None:
    source = b'import re\nPATTERN = re.compile("\\d+")\nif PATTERN is 1:\n    pass\n'
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_python_source(source, "w.py") == []


def test_match_needs_310() -> None:
    source = b"def f(x):\n    match x:\n        case 1:\n            return 'one'\n"
    assert check_python_source(source, "m.py") == []
    assert check_python_source(source, "m.py", (3, 10)) == []
    [finding] = check_python_source(source, "m.py", (3, 9))
    # CPython reports a feature-gated statement where its parse ends (end of the match block).
    assert positions([finding]) == ["m.py:4:25:python"] and "3.10" in finding.message


def test_walrus_and_except_star_are_gated_by_target() -> None:
    assert check_python_source(b"if (n := 3) > 2:\n    pass\n", "w.py", (3, 8)) == []
    [walrus] = check_python_source(b"if (n := 3) > 2:\n    pass\n", "w.py", (3, 7))
    assert walrus.line == 1 and "3.8" in walrus.message
    [star] = check_python_source(b"try:\n    pass\nexcept* ValueError:\n    pass\n", "s.py", (3, 10))
    assert positions([star]) == ["s.py:4:9:python"] and "3.11" in star.message


def test_older_target_still_runs_the_compiler_checks() -> None:
    [finding] = check_python_source(b"x = 1\nreturn x\n", "r.py", (3, 9))
    assert positions([finding]) == ["r.py:2:1:python"] and "'return' outside function" in finding.message


@pytest.mark.skipif(RUNNING_VERSION >= (3, 12), reason="the running interpreter understands PEP 695")
def test_pep695_type_alias_fails_when_the_interpreter_cannot_parse_it() -> None:
    # A 3.12 construct under 3.11: even with the running interpreter's full grammar it is an error.
    [finding] = check_python_source(b"type Point = tuple[float, float]\n", "t.py", (3, 11))
    assert positions([finding]) == ["t.py:1:6:python"]


def test_target_versions_the_interpreter_cannot_check_are_refused() -> None:
    newer = (RUNNING_VERSION[0], RUNNING_VERSION[1] + 1)
    with pytest.raises(UnsupportedTargetVersion, match="newer than this interpreter"):
        check_python_source(b"x = 1\n", "a.py", newer)
    with pytest.raises(UnsupportedTargetVersion, match="only Python 3"):
        check_python_source(b"x = 1\n", "a.py", (2, 7))
    assert parse_target_version(" 3.9 ") == (3, 9)
    for bad in ("3", "3.x", "three", "3.9.1"):
        with pytest.raises(UnsupportedTargetVersion, match="malformed"):
            parse_target_version(bad)


# ----------------------------------------------------------------------------------- YAML/JSON/TOML


def test_yaml_tolerates_application_tags() -> None:
    text = "Resources:\n  Bucket:\n    Properties:\n      Name: !Ref Name\n      Arn: !GetAtt [B, Arn]\n      S: !Sub {a: 1}\n"
    assert check_yaml_text(text, "template.yaml") == []


def test_yaml_errors_point_into_the_right_document() -> None:
    text = "a: 1\n---\nkey: value\n  bad: indent\n"
    [finding] = check_yaml_text(text, "multi.yaml")
    assert positions([finding]) == ["multi.yaml:4:6:yaml"]
    [flow] = check_yaml_text("a: [1, 2\nb: 3\n", "f.yml")
    assert flow.line == 2 and "flow sequence" in flow.message and "line 1" in flow.message


def test_yaml_values_that_fail_to_construct_are_findings_not_crashes() -> None:
    [finding] = check_yaml_text("ok: 1\nport: !!int eighty\n", "v.yaml")
    assert positions([finding]) == ["v.yaml:2:7:yaml"] and "!!int" in finding.message
    [unhashable] = check_yaml_text("? [a, b]\n: 1\n", "k.yaml")
    assert unhashable.kind == "yaml" and "unhashable" in unhashable.message


def test_json_error_position() -> None:
    [finding] = check_json_text('{\n  "a": 1,\n  "b" 2\n}\n', "data.json")
    assert positions([finding]) == ["data.json:3:7:json"] and "delimiter" in finding.message


def test_jsonc_files_allow_comments_and_trailing_commas_but_nothing_else() -> None:
    text = '{\n  // compiler options\n  "compilerOptions": {"outDir": "dist//x", /* inline */ "strict": true,},\n}\n'
    assert check_json_text(text, "tsconfig.json") == []
    assert check_json_text(text, ".vscode/settings.json") == []
    assert check_json_text(text, "web/app.jsonc") == []
    assert positions(check_json_text(text, "config.json")) == ["config.json:2:3:json"]
    [broken] = check_json_text('{\n  // ok\n  "a": 1\n  "b": 2\n}\n', "tsconfig.base.json")
    assert positions([broken]) == ["tsconfig.base.json:4:3:json"]


def test_toml_error_positions() -> None:
    [finding] = check_toml_text('[tool]\nname = "x"\nversion = \n', "pyproject.toml")
    assert positions([finding]) == ["pyproject.toml:3:11:toml"]
    assert "(at line" not in finding.message
    [at_end] = check_toml_text("a = [1,", "end.toml")
    assert positions([at_end]) == ["end.toml:1:8:toml"]


# ------------------------------------------------------------------------------------------ conflicts


def test_conflict_markers_including_diff3() -> None:
    text = (
        "keep\n<<<<<<< HEAD\nours\n||||||| merged common ancestors\nbase\n=======\ntheirs\n>>>>>>> feature\n"
    )
    findings = find_conflict_markers(text, "notes.txt")
    assert positions(findings) == [f"notes.txt:{n}:1:conflict" for n in (2, 4, 6, 8)]
    assert ["<<<<<<<" in findings[0].message, ">>>>>>>" in findings[3].message] == [True, True]


def test_separator_alone_is_not_a_conflict() -> None:
    rst = "Title\n=======\n\nText\n\n=======\n"
    assert find_conflict_markers(rst, "README.rst") == []
    assert find_conflict_markers("a <<<<<<< b\n========\n", "x.md") == []  # not at line start / 8 chars


def test_a_stray_closing_marker_is_reported() -> None:
    assert positions(find_conflict_markers("x\r\n>>>>>>> main\r\n", "f.cfg")) == ["f.cfg:2:1:conflict"]


# ----------------------------------------------------------------------------------- ignore patterns


@pytest.mark.parametrize(
    ("pattern", "path", "is_dir", "expected"),
    [
        ("*.log", "a/b/x.log", False, True),
        ("/top.txt", "top.txt", False, True),
        ("/top.txt", "sub/top.txt", False, False),
        ("out/", "a/out", True, True),
        ("out/", "a/out", False, False),
        ("docs/*.md", "docs/a.md", False, True),
        ("docs/*.md", "docs/sub/a.md", False, False),
        ("**/gen", "x/y/gen", True, True),
        ("a/**/z.py", "a/z.py", False, True),
        ("a/**/z.py", "a/b/c/z.py", False, True),
        ("logs/**", "logs/x/y.txt", False, True),
        ("file[0-9].txt", "file7.txt", False, True),
        ("file[!0-9].txt", "file7.txt", False, False),
        ("\\#hash", "#hash", False, True),
    ],
)
def test_gitignore_patterns(pattern: str, path: str, is_dir: bool, expected: bool) -> None:
    assert is_ignored(path, is_dir, [IgnoreSet("", parse_ignore_file(pattern))]) is expected


def test_gitignore_negation_and_nesting() -> None:
    sets = [
        IgnoreSet("", parse_ignore_file("*.json\n!keep.json\n")),
        IgnoreSet("sub", parse_ignore_file("keep.json")),
    ]
    assert is_ignored("a.json", False, sets)
    assert not is_ignored("keep.json", False, sets)
    assert is_ignored("sub/keep.json", False, sets)  # the deeper file has the last word


def test_exclude_filter_covers_everything_below_a_directory() -> None:
    path_filter = PathFilter(["legacy/", "./gen/*_pb2.py"])
    assert path_filter.excluded("src/legacy/deep/x.py")
    assert path_filter.excluded("gen/a_pb2.py")
    assert not path_filter.excluded("gen/a.py")


# ---------------------------------------------------------------------------------------- repository

BROKEN_PY = "def broken(:\n    pass\n"
BROKEN_YAML = "a: 1\n b: 2\n"


def sample_repo(root: Path) -> None:
    write(
        root,
        {
            "app/main.py": "import os\n\nprint 'hello'\n",
            "app/ok.py": "def f() -> int:\n    return 1\n",
            "config/app.yaml": "name: x\nlist: [1, 2\n",
            "config/data.json": '{"a": 1,}',
            "pyproject.toml": '[project]\nname = "x"\nversion = \n',
            "docs/notes.txt": "x\n<<<<<<< HEAD\na\n=======\nb\n>>>>>>> other\n",
            "scripts/deploy": "#!/bin/sh\n>>>>>>> leftover\n",
            "assets/logo.bin": b"\x89PNG\r\n\x1a\n\x00\x00<<<<<<< HEAD\n",
            "assets/image.png": b"<<<<<<< HEAD\n",
            "k8s/deploy.yml": "kind: Deployment\nspec: !Ref Thing\n",
            "chart/Chart.yaml": "name: c\n",
            "chart/templates/deploy.yaml": "{{- if .Values.on }}\nkind: x\n{{- end }}\n",
            # vendored / generated: never checked
            "node_modules/pkg/index.json": "{",
            ".venv/lib/site.py": BROKEN_PY,
            "venv/x.py": BROKEN_PY,
            "vendor/lib.py": BROKEN_PY,
            "third_party/a/b.py": BROKEN_PY,
            "build/lib/x.py": BROKEN_PY,
            "dist/x.toml": "=",
            "pkg.egg-info/x.py": BROKEN_PY,
            "src/__pycache__/x.py": BROKEN_PY,
            "src/.tox/x.yaml": BROKEN_YAML,
        },
    )


EXPECTED_SAMPLE = [
    "app/main.py:3:1:python",
    "config/app.yaml:3:1:yaml",
    "config/data.json:1:9:json",
    "docs/notes.txt:2:1:conflict",
    "docs/notes.txt:4:1:conflict",
    "docs/notes.txt:6:1:conflict",
    "pyproject.toml:3:11:toml",
    "scripts/deploy:2:1:conflict",
]


def test_walk_outside_git_finds_every_kind_and_skips_vendored_and_binary(tmp_path: Path) -> None:
    sample_repo(tmp_path)
    report = check_repository(tmp_path, jobs=1)
    assert positions(report.findings) == EXPECTED_SAMPLE
    assert report.files_checked == {"python": 2, "yaml": 3, "json": 1, "toml": 1, "text": 3}
    assert report.skipped == 2  # the two binaries; vendored directories are pruned unread
    assert not report.ok and report.root == str(tmp_path.resolve())


def test_walker_honours_gitignore_files(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            ".gitignore": "*.gen.py\n/secret/\nlogs/\n!keep.gen.py\n",
            "a.gen.py": BROKEN_PY,
            "keep.gen.py": BROKEN_PY,
            "secret/x.py": BROKEN_PY,
            "nested/secret/x.py": BROKEN_PY,
            "nested/logs/x.py": BROKEN_PY,
            "nested/.gitignore": "local.py\n",
            "nested/local.py": BROKEN_PY,
            "local.py": BROKEN_PY,
        },
    )
    report = check_repository(tmp_path, jobs=1)
    assert [f.path for f in report.findings] == ["keep.gen.py", "local.py", "nested/secret/x.py"]


@needs_git
def test_git_listing_honours_gitignore_and_info_exclude(tmp_path: Path) -> None:
    git_init(tmp_path)
    write(
        tmp_path,
        {
            ".gitignore": "ignored/\n*.tmp.py\n",
            "ignored/x.py": BROKEN_PY,
            "a.tmp.py": BROKEN_PY,
            "sub/.gitignore": "mine.json\n",
            "sub/mine.json": "{",
            "sub/other.json": "{",
            "excluded.py": BROKEN_PY,
            "checked.py": BROKEN_PY,
            "node_modules/x/y.py": BROKEN_PY,
        },
    )
    (tmp_path / ".git" / "info" / "exclude").write_text("excluded.py\n")
    report = check_repository(tmp_path, jobs=1)
    assert [f.path for f in report.findings] == ["checked.py", "sub/other.json"]
    assert report.skipped == 1  # node_modules/x/y.py: listed by git, skipped as vendored


@needs_git
def test_root_below_the_top_of_a_git_work_tree_gets_paths_relative_to_itself(tmp_path: Path) -> None:
    git_init(tmp_path)
    write(tmp_path, {"service/app/bad.py": BROKEN_PY, "other/bad.py": BROKEN_PY, ".gitignore": "*.skip.py\n"})
    write(tmp_path, {"service/x.skip.py": BROKEN_PY})
    report = check_repository(tmp_path / "service", jobs=1)
    assert positions(report.findings) == ["app/bad.py:1:12:python"]


def test_user_excludes(tmp_path: Path) -> None:
    write(tmp_path, {"gen/a_pb2.py": BROKEN_PY, "legacy/old.py": BROKEN_PY, "src/new.py": BROKEN_PY})
    report = check_repository(tmp_path, exclude=["*_pb2.py", "legacy/"], jobs=1)
    assert [f.path for f in report.findings] == ["src/new.py"]


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, {"bad.py": BROKEN_PY})
    repo = tmp_path / "repo"
    write(repo, {"ok.py": "x = 1\n"})
    (repo / "link.py").symlink_to(outside / "bad.py")
    (repo / "linkdir").symlink_to(outside, target_is_directory=True)
    report = check_repository(repo, jobs=1)
    assert report.ok and report.files_checked["python"] == 1 and report.skipped == 2  # both links


def test_pool_gives_the_same_report_as_in_process(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sample_repo(tmp_path)
    for index in range(40):  # enough files for several chunks
        write(tmp_path, {f"many/m{index:02}.py": BROKEN_PY if index % 3 == 0 else "x = 1\n"})
    single = check_repository(tmp_path, jobs=1)
    with caplog.at_level(logging.WARNING, logger="stagecheck.syntax.runner"):
        pooled = check_repository(tmp_path, jobs=2, pool_threshold=0)
    assert not caplog.records  # the pool really ran: no in-process fallback
    assert pooled.findings == single.findings
    assert (pooled.files_checked, pooled.skipped) == (single.files_checked, single.skipped)
    assert single.findings == tuple(sorted(single.findings, key=lambda f: (f.path, f.line, f.col)))
    assert len(single.findings) == len(EXPECTED_SAMPLE) + 14


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_pool_start_methods_agree(
    tmp_path: Path, start_method: str, caplog: pytest.LogCaptureFixture
) -> None:
    sample_repo(tmp_path)
    listing = discover(tmp_path)
    expected = check_items(str(tmp_path), listing.files, target_version=(3, 9), jobs=1)
    with caplog.at_level(logging.WARNING, logger="stagecheck.syntax.runner"):
        pooled = check_items(
            str(tmp_path), listing.files, target_version=(3, 9), jobs=2, start_method=start_method
        )
    assert not caplog.records
    assert sorted(pooled.findings, key=SyntaxFinding.sort_key) == sorted(
        expected.findings, key=SyntaxFinding.sort_key
    )
    assert (pooled.checked, pooled.skipped) == (expected.checked, expected.skipped)


def test_nothing_is_written_into_the_repository(tmp_path: Path) -> None:
    write(tmp_path, {"pkg/__init__.py": "", "pkg/mod.py": "import os\nX = os.sep\n", "pkg/bad.py": BROKEN_PY})
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    check_repository(tmp_path, jobs=1)
    check_repository(tmp_path, jobs=2, pool_threshold=0)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not list(tmp_path.rglob("__pycache__"))


def test_bad_roots_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        check_repository(tmp_path / "missing")
    (tmp_path / "file.py").write_text("x = 1\n")
    with pytest.raises(NotADirectoryError):
        check_repository(tmp_path / "file.py")


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_clean_repository_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"a.py": "x = 1\n", "b.yaml": "a: 1\n"})
    assert check_syntax.main([str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "2 files checked" in err and "0 findings" in err


def test_cli_findings_exit_1_one_line_each_relative_to_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample_repo(tmp_path)
    assert check_syntax.main([str(tmp_path), "--jobs", "1"]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [p.rsplit(":", 1)[0] for p in EXPECTED_SAMPLE]
    assert lines[0].startswith("app/main.py:3:1: SyntaxError: Missing parentheses")
    assert len(err.splitlines()) == 1 and f"{len(EXPECTED_SAMPLE)} findings" in err


def test_cli_json_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"bad.json": '{"a" 1}'})
    assert check_syntax.main([str(tmp_path), "--format", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False and document["files_checked"]["json"] == 1
    assert document["findings"] == [
        {"path": "bad.json", "line": 1, "col": 6, "message": "Expecting ':' delimiter", "kind": "json"}
    ]


def test_cli_target_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"m.py": "match 1:\n    case 1:\n        pass\n"})
    assert check_syntax.main([str(tmp_path)]) == 0
    assert check_syntax.main([str(tmp_path), "--target-version", "3.9"]) == 1
    assert capsys.readouterr().out.startswith("m.py:3:13: SyntaxError: Pattern matching")
    newer = f"{RUNNING_VERSION[0]}.{RUNNING_VERSION[1] + 1}"
    assert check_syntax.main([str(tmp_path), "--target-version", newer]) == 2
    assert "newer than this interpreter" in capsys.readouterr().err
    assert check_syntax.main([str(tmp_path), "--target-version", "3.nine"]) == 2
    assert "malformed" in capsys.readouterr().err


def test_cli_bad_usage_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_syntax.main([]) == 2
    assert check_syntax.main([str(tmp_path), "--jobs", "0"]) == 2
    assert check_syntax.main([str(tmp_path), "--format", "xml"]) == 2
    (tmp_path / "f.txt").write_text("x")
    assert check_syntax.main([str(tmp_path / "f.txt")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_cli_missing_path_through_the_real_entry_point_has_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "check-syntax", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=60,
    )
    assert result.returncode == 2
    assert "no such directory" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
