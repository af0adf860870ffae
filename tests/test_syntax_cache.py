"""The syntax stage's content-addressed result cache, and git / non-git discovery feeding it."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from cli.commands import check_syntax
from stagecheck.syntax import check_repository
from stagecheck.syntax.cache import (
    DB_NAME,
    PASSED,
    CachedResult,
    FileStore,
    SqliteStore,
    blob_id,
    decode_entry,
    default_cache_dir,
    entry_key,
    environment_digest,
)
from stagecheck.syntax.discovery import discover, git_listing

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

BROKEN_PY = "def broken(:\n    pass\n"
OK_PY = "def fine() -> int:\n    return 1\n"


def write(root: Path, files: dict[str, str]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")


def git(root: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args],
        cwd=root, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return result.stdout


def sample(root: Path) -> None:
    write(
        root,
        {
            "app/ok.py": OK_PY,
            "app/bad.py": BROKEN_PY,
            "config/a.yaml": "a: 1\n b: 2\n",
            "config/ok.json": '{"a": 1}',
            ".vscode/settings.json": '{"a": 1, // comment\n}',
            "notes.md": "x\n<<<<<<< HEAD\n",
        },
    )


def positions(report: object) -> list[str]:
    return [f"{f.path}:{f.line}:{f.col}:{f.kind}:{f.message}" for f in report.findings]  # type: ignore[attr-defined]


def rows(cache: Path) -> dict[str, str]:
    with sqlite3.connect(cache / DB_NAME) as db:
        return dict(db.execute("SELECT key, value FROM results"))


def set_value(cache: Path, key: str, value: str) -> None:
    db = sqlite3.connect(cache / DB_NAME)
    with db:
        db.execute("UPDATE results SET value = ? WHERE key = ?", (value, key))
    db.close()


def key_for(cache: Path, content: str) -> str:
    wanted = blob_id(content.encode())
    return next(k for k in rows(cache) if k.endswith(":" + wanted))


def test_second_run_is_served_from_the_cache_with_identical_findings(tmp_path: Path) -> None:
    repo, cache = tmp_path / "repo", tmp_path / "cache"
    sample(repo)
    first = check_repository(repo, jobs=1, cache_dir=cache)
    second = check_repository(repo, jobs=1, cache_dir=cache)
    assert first.from_cache == 0
    assert second.from_cache == first.total_checked == 6
    assert positions(second) == positions(first)
    assert [f.path for f in second.findings] == ["app/bad.py", "config/a.yaml", "notes.md"]
    assert second.files_checked == first.files_checked and second.skipped == first.skipped
    uncached = check_repository(repo, jobs=1, cache=False, cache_dir=cache)
    assert uncached.from_cache == 0 and positions(uncached) == positions(first)


def test_findings_are_remembered_and_follow_the_content_to_new_paths(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    write(tmp_path / "one", {"bad.py": BROKEN_PY})
    check_repository(tmp_path / "one", jobs=1, cache_dir=cache)
    write(tmp_path / "two", {"deep/renamed.py": BROKEN_PY})  # same content, another clone and path
    report = check_repository(tmp_path / "two", jobs=1, cache_dir=cache)
    assert report.from_cache == 1
    assert [str(f) for f in report.findings] == ["deep/renamed.py:1:12: SyntaxError: invalid syntax"]


def test_jsonc_and_strict_json_of_the_same_content_are_separate_entries(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    content = '{"a": 1, // comment\n}'
    write(tmp_path / "one", {".vscode/settings.json": content})
    assert check_repository(tmp_path / "one", jobs=1, cache_dir=cache).ok
    write(tmp_path / "two", {"data.json": content})
    report = check_repository(tmp_path / "two", jobs=1, cache_dir=cache)
    assert report.from_cache == 0 and [f.kind for f in report.findings] == ["json"]


def test_one_changed_file_is_rechecked_and_the_rest_come_from_the_cache(tmp_path: Path) -> None:
    repo, cache = tmp_path / "repo", tmp_path / "cache"
    sample(repo)
    check_repository(repo, jobs=1, cache_dir=cache)
    (repo / "app" / "ok.py").write_text("def now_broken(:\n", encoding="utf-8")
    report = check_repository(repo, jobs=1, cache_dir=cache)
    assert report.from_cache == 5
    assert [f.path for f in report.findings] == ["app/bad.py", "app/ok.py", "config/a.yaml", "notes.md"]


def test_a_different_target_version_does_not_reuse_results(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    write(tmp_path, {"m.py": "match x:\n    case 1:\n        pass\n"})
    assert check_repository(tmp_path, jobs=1, cache_dir=cache).ok
    old = check_repository(tmp_path, jobs=1, cache_dir=cache, target_version=(3, 9))
    assert old.from_cache == 0 and [f.kind for f in old.findings] == ["python"]
    assert environment_digest(None) != environment_digest((3, 9))


@pytest.mark.parametrize(
    "forged",
    [
        "not json at all",
        '{"key": "x", "skipped": false, "findings": []}',  # another entry's value: wrong key
        "[]",
        "KEY_PASS_WITH_EXTRA_FIELD",
        "KEY_BAD_FINDING",
    ],
)
def test_corrupted_or_foreign_entries_are_ignored_and_rewritten(tmp_path: Path, forged: str) -> None:
    cache = tmp_path / "cache"
    write(tmp_path / "repo", {"bad.py": BROKEN_PY, "ok.py": OK_PY})
    expected = positions(check_repository(tmp_path / "repo", jobs=1, cache_dir=cache))
    key = key_for(cache, BROKEN_PY)
    original = rows(cache)[key]
    forged = forged.replace(
        "KEY_PASS_WITH_EXTRA_FIELD", json.dumps({"key": key, "skipped": False, "findings": [], "ok": True})
    ).replace("KEY_BAD_FINDING", json.dumps({"key": key, "skipped": False, "findings": [[1, 1, "nope", "x"]]}))
    set_value(cache, key, forged)  # e.g. a "pass" planted for the broken file
    report = check_repository(tmp_path / "repo", jobs=1, cache_dir=cache)
    assert positions(report) == expected  # the finding is not hidden
    assert report.from_cache == 1  # only ok.py was trusted
    assert rows(cache)[key] == original  # rewritten with the real result
    assert check_repository(tmp_path / "repo", jobs=1, cache_dir=cache).from_cache == 2


def test_a_pass_planted_under_the_broken_files_own_key_is_the_only_thing_trusted(tmp_path: Path) -> None:
    """The cache is keyed by content: a well-formed entry under the right key is believed, which is
    why the key carries the content id, the interpreter, the target and the checker version."""
    cache = tmp_path / "cache"
    write(tmp_path / "repo", {"bad.py": BROKEN_PY})
    check_repository(tmp_path / "repo", jobs=1, cache_dir=cache)
    key = key_for(cache, BROKEN_PY)
    assert decode_entry(key, rows(cache)[key]) == CachedResult(False, ((1, 12, "python", "SyntaxError: invalid syntax"),))
    assert decode_entry(key, PASSED.encode("another-key")) is None


def test_a_cache_file_that_is_not_a_database_is_replaced(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / DB_NAME).write_bytes(b"this is not an sqlite database" * 100)
    write(tmp_path / "repo", {"bad.py": BROKEN_PY})
    report = check_repository(tmp_path / "repo", jobs=1, cache_dir=cache)
    assert [f.path for f in report.findings] == ["bad.py"] and report.from_cache == 0
    again = check_repository(tmp_path / "repo", jobs=1, cache_dir=cache)
    assert again.from_cache == 1 and [f.path for f in again.findings] == ["bad.py"]


def test_an_unusable_cache_directory_costs_speed_not_results(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache directory should be")
    write(tmp_path / "repo", {"bad.py": BROKEN_PY})
    report = check_repository(tmp_path / "repo", jobs=1, cache_dir=blocker / "cache")
    assert [f.path for f in report.findings] == ["bad.py"] and report.from_cache == 0


def test_pool_workers_fill_the_cache_too(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    write(tmp_path / "repo", {f"m{i:02}.py": BROKEN_PY if i % 4 == 0 else f"x = {i}\n" for i in range(24)})
    pooled = check_repository(tmp_path / "repo", jobs=2, pool_threshold=0, cache_dir=cache)
    again = check_repository(tmp_path / "repo", jobs=2, pool_threshold=0, cache_dir=cache)
    assert again.from_cache == 24 and positions(again) == positions(pooled) and len(pooled.findings) == 6


def test_both_store_formats_round_trip_and_reject_foreign_values(tmp_path: Path) -> None:
    entries = {
        "k1": PASSED,
        "k2": CachedResult(False, ((3, 4, "yaml", "mapping values are not allowed here"),)),
        "k3": CachedResult(True, ()),
    }
    for store in (SqliteStore(tmp_path / "sqlite"), FileStore(tmp_path / "files")):
        store.store(entries)
        assert store.lookup(["k1", "k2", "k3", "missing"]) == entries
        store.store({"k1": entries["k2"]})
        assert store.lookup(["k1"]) == {"k1": entries["k2"]}
        store.close()


def test_default_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STAGECHECK_CACHE_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("STAGECHECK_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "stagecheck"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "stagecheck"


def test_cli_cache_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "repo", {"bad.py": BROKEN_PY})
    cache = tmp_path / "cache"
    argv = [str(tmp_path / "repo"), "--format", "json", "--cache-dir", str(cache)]
    outputs = []
    for extra in ([], [], ["--no-cache"]):
        assert check_syntax.main([*argv, *extra]) == 1
        outputs.append(json.loads(capsys.readouterr().out))
    assert [o["from_cache"] for o in outputs] == [0, 1, 0]
    assert [[f["path"] for f in o["findings"]] for o in outputs] == [["bad.py"]] * 3
    assert (cache / DB_NAME).is_file()


# ------------------------------------------------------------------------------------------- discovery


@needs_git
def test_git_listing_gives_blob_ids_only_for_files_that_match_the_index(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    write(tmp_path, {"clean.py": OK_PY, "dirty.py": OK_PY, "staged.py": OK_PY, "gone.py": OK_PY})
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "x")
    (tmp_path / "dirty.py").write_text(BROKEN_PY)
    (tmp_path / "staged.py").write_text(BROKEN_PY)
    git(tmp_path, "add", "staged.py")
    (tmp_path / "staged.py").write_text(OK_PY + "# edited after staging\n")
    (tmp_path / "gone.py").unlink()
    write(tmp_path, {"untracked.py": BROKEN_PY})
    listing = git_listing(tmp_path)
    assert listing is not None
    assert sorted(listing.paths) == ["clean.py", "dirty.py", "gone.py", "staged.py", "untracked.py"]
    assert listing.blob_ids == {"clean.py": git(tmp_path, "hash-object", "clean.py").strip()}
    assert listing.blob_ids["clean.py"] == blob_id(OK_PY.encode())


@needs_git
def test_in_a_checkout_modified_and_untracked_files_are_checked_by_their_working_content(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    write(repo, {"a.py": OK_PY, "b.py": OK_PY})
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "x")
    assert check_repository(repo, jobs=1, cache_dir=cache).ok
    (repo / "a.py").write_text(BROKEN_PY)  # dirty: the index still holds the passing blob's id
    write(repo, {"new.py": BROKEN_PY})
    report = check_repository(repo, jobs=1, cache_dir=cache)
    assert [f.path for f in report.findings] == ["a.py", "new.py"]
    assert report.from_cache == 1  # b.py


@needs_git
def test_a_fresh_clone_hits_the_entries_another_clone_wrote(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q")
    sample(origin)
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "x")
    first = check_repository(origin, jobs=1, cache_dir=cache)
    subprocess.run(["git", "clone", "-q", str(origin), str(tmp_path / "clone")], check=True)
    second = check_repository(tmp_path / "clone", jobs=1, cache_dir=cache)
    assert second.from_cache == second.total_checked == first.total_checked
    assert positions(second) == positions(first)
    plain = tmp_path / "plain"
    shutil.copytree(origin, plain, ignore=shutil.ignore_patterns(".git"))
    assert check_repository(plain, jobs=1, cache_dir=cache).from_cache == first.total_checked


@needs_git
def test_content_changing_attributes_make_git_ids_untrusted(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    write(tmp_path, {"a.py": OK_PY, ".gitattributes": "*.bin filter=lfs diff=lfs merge=lfs -text\n"})
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "x")
    listing = git_listing(tmp_path)
    assert listing is not None and listing.blob_ids == {}
    (tmp_path / ".gitattributes").write_text("*.md linguist-documentation\n")
    git(tmp_path, "commit", "-q", "-am", "y")
    listing = git_listing(tmp_path)
    assert listing is not None and set(listing.blob_ids) == {"a.py", ".gitattributes"}


def test_without_git_discovery_walks_with_pathspec_and_gives_no_ids(tmp_path: Path) -> None:
    write(tmp_path, {".gitignore": "gen/\n*.log.py\n!keep.log.py\n", "gen/x.py": BROKEN_PY,
                     "a.log.py": BROKEN_PY, "keep.log.py": OK_PY, "src/m.py": OK_PY})  # fmt: skip
    listing = discover(tmp_path)
    assert listing.source == "walk" and listing.blob_ids == {}
    assert [p for p, _ in listing.files] == [".gitignore", "keep.log.py", "src/m.py"]


def test_entry_key_names_every_part(tmp_path: Path) -> None:
    key = entry_key(environment_digest(None), "python", blob_id(b"x = 1\n"))
    assert key.endswith(":python:" + blob_id(b"x = 1\n"))


def test_files_modified_within_the_racy_window_are_not_recorded(tmp_path: Path) -> None:
    cache, repo = tmp_path / "cache", tmp_path / "repo"
    write(repo, {"ok.py": OK_PY})
    check_repository(repo, jobs=1, cache_dir=cache)  # written just now: inside the window
    assert SqliteStore(cache).known_contents(str(repo.resolve())) == {}


def test_without_git_settled_files_are_not_rehashed_while_their_stat_signature_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("stagecheck.syntax.cache.RACY_WINDOW_S", 0.0)  # everything written so far is settled
    cache, repo = tmp_path / "cache", tmp_path / "repo"
    write(repo, {"ok.py": OK_PY})
    check_repository(repo, jobs=1, cache_dir=cache)
    store = SqliteStore(cache)
    recorded = store.known_contents(str(repo.resolve()))
    assert set(recorded) == {"ok.py"} and recorded["ok.py"][1] == blob_id(OK_PY.encode())
    # Proof that the signature is what is trusted: point it at another content's id.
    store.remember_contents(str(repo.resolve()), {"ok.py": (recorded["ok.py"][0], blob_id(b"x"))})
    store.close()
    report = check_repository(repo, jobs=1, cache_dir=cache)
    assert report.from_cache == 0  # ok.py was taken to be content "x", which was never checked
    assert SqliteStore(cache).known_contents(str(repo.resolve()))["ok.py"][1] == blob_id(b"x")


def test_an_edit_that_keeps_size_and_mtime_is_still_seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stagecheck.syntax.cache.RACY_WINDOW_S", 0.0)
    cache, repo = tmp_path / "cache", tmp_path / "repo"
    write(repo, {"m.py": "x = (1)\n"})
    assert check_repository(repo, jobs=1, cache_dir=cache).ok
    assert "m.py" in SqliteStore(cache).known_contents(str(repo.resolve()))
    before = (repo / "m.py").stat()
    (repo / "m.py").write_text("x = (1(\n")  # same size
    os.utime(repo / "m.py", ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime; ctime moves on
    report = check_repository(repo, jobs=1, cache_dir=cache)
    assert [f.path for f in report.findings] == ["m.py"]


def test_the_cache_dir_variable_is_not_read_as_a_pipeline_setting() -> None:
    from stagecheck.settings import env_overrides

    environ = {"STAGECHECK_CACHE_DIR": "/tmp/x", "STAGECHECK_PROBES__DEADLINE_S": "9"}
    assert env_overrides(environ) == {"probes": {"deadline_s": "9"}}


def test_the_stage_result_says_how_many_results_were_remembered(tmp_path: Path) -> None:
    from tasks.syntax import syntax_stage_result

    cache = tmp_path / "cache"
    write(tmp_path / "repo", {"a.py": OK_PY, "b.py": "x = 2\n"})
    first = syntax_stage_result(check_repository(tmp_path / "repo", jobs=1, cache_dir=cache))
    (tmp_path / "repo" / "b.py").write_text("x = 3\n")
    second = syntax_stage_result(check_repository(tmp_path / "repo", jobs=1, cache_dir=cache))
    assert "remembered" not in first.summary and first.evidence[0].data["from_cache"] == 0
    assert second.summary.endswith(", 1 remembered by content")
    assert second.evidence[0].data["from_cache"] == 1


def test_a_store_grown_past_its_cap_starts_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    write(tmp_path / "repo", {"bad.py": BROKEN_PY, "ok.py": OK_PY})
    check_repository(tmp_path / "repo", jobs=1, cache_dir=cache)
    assert check_repository(tmp_path / "repo", jobs=1, cache_dir=cache).from_cache == 2
    monkeypatch.setattr("stagecheck.syntax.cache.MAX_STORE_BYTES", 1)
    report = check_repository(tmp_path / "repo", jobs=1, cache_dir=cache)
    assert report.from_cache == 0 and [f.path for f in report.findings] == ["bad.py"]
    assert len(rows(cache)) == 2  # the new store holds this run's results
