"""Per-run checkouts of the requested commit (stagecheck.checkout, tasks.checkout) on real git
repositories: a bare `origin` on local paths, a shallow clone that is at neither commit."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from stagecheck.checkout import (
    Checkout,
    CheckoutError,
    owner_reason,
    prepare,
    remove,
    worktrees,
)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@dataclass
class Repos:
    origin: Path  # bare
    shas: list[str]  # oldest first; origin's main is at the last
    clone: Path  # shallow clone of origin's main: has only the last commit
    root: Path  # where per-run checkouts go


@pytest.fixture
def repos(tmp_path: Path) -> Repos:
    src = tmp_path / "src"
    subprocess.run(["git", "init", "-q", "-b", "main", str(src)], check=True)
    git(src, "config", "user.email", "t@example.com")
    git(src, "config", "user.name", "t")
    shas = []
    for n in range(3):
        (src / "svc").mkdir(exist_ok=True)
        (src / "svc" / "VERSION").write_text(f"{n}\n")
        (src / "stagecheck.toml").write_text(f"# version {n}\n")
        git(src, "add", "-A")
        git(src, "commit", "-qm", f"v{n}")
        shas.append(git(src, "rev-parse", "HEAD"))
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(src), str(origin)], check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{origin}", str(clone)], check=True)
    return Repos(origin=origin, shas=shas, clone=clone, root=tmp_path / "cache" / "checkouts")


def version(tree: Path) -> str:
    return (tree / "svc" / "VERSION").read_text().strip()


def test_head_is_used_in_place_and_uncommitted_changes_are_refused(repos: Repos) -> None:
    head = repos.shas[-1]
    for requested in (None, head, head[:7]):
        checkout = prepare(repos.clone, requested, root=repos.root)
        assert (checkout.sha, checkout.tree, checkout.per_run) == (head, repos.clone, False)
    (repos.clone / "svc" / "VERSION").write_text("edited\n")
    with pytest.raises(CheckoutError, match="uncommitted changes"):
        prepare(repos.clone, None, (repos.clone / "svc",), root=repos.root)
    # a requested commit is exact even when the clone is dirty: it gets its own tree
    checkout = prepare(repos.clone, head, (repos.clone / "svc",), root=repos.root)
    assert checkout.per_run and version(checkout.tree) == "2"
    remove(checkout)


def test_a_commit_the_clone_lacks_is_fetched_into_its_own_tree_and_removed(repos: Repos) -> None:
    first = repos.shas[0]
    assert subprocess.run(["git", "-C", str(repos.clone), "cat-file", "-e", f"{first}^{{commit}}"],
                          capture_output=True).returncode != 0  # the shallow clone does not have it
    checkout = prepare(repos.clone, first, root=repos.root)
    assert checkout.per_run and checkout.sha == first
    assert checkout.tree.parent == repos.root.resolve() and checkout.tree.name.startswith(first[:12])
    assert version(checkout.tree) == "0" and git(checkout.tree, "rev-parse", "HEAD") == first
    assert "fetched from origin" in checkout.how
    assert git(repos.clone, "rev-parse", "HEAD") == repos.shas[-1]  # the clone itself did not move
    assert checkout.relocate(repos.clone / "svc") == checkout.tree / "svc"
    assert checkout.relocate(Path("/elsewhere")) == Path("/elsewhere")
    remove(checkout)
    assert not checkout.tree.exists()
    assert [w.path for w in worktrees(repos.clone)] == [repos.clone.resolve()]


def test_an_abbreviated_sha_is_found_after_fetching_the_branches(repos: Repos) -> None:
    checkout = prepare(repos.clone, repos.shas[1][:9], root=repos.root)
    assert checkout.sha == repos.shas[1] and version(checkout.tree) == "1"
    remove(checkout)


def test_a_configured_remote_url_is_used_when_the_clone_has_no_origin(repos: Repos, monkeypatch: pytest.MonkeyPatch
                                                                      ) -> None:
    git(repos.clone, "remote", "remove", "origin")
    with pytest.raises(CheckoutError, match=r"not found in the clone .* no remote 'origin'.*STAGECHECK_GIT_REMOTE"):
        prepare(repos.clone, repos.shas[0], root=repos.root)
    monkeypatch.setenv("STAGECHECK_GIT_REMOTE", str(repos.origin))
    checkout = prepare(repos.clone, repos.shas[0], root=repos.root)
    assert version(checkout.tree) == "0"
    remove(checkout)


@pytest.mark.parametrize(("requested", "reason"), [
    ("main", "not a hex commit id"),
    ("0123456789abcdef0123456789abcdef01234567", "commit 0123456789ab.* not found: git fetch from origin failed"),
    ("abcdef0", "commit abcdef0 not found"),
])
def test_a_bad_or_unknown_sha_is_refused_with_the_reason(repos: Repos, requested: str, reason: str) -> None:
    with pytest.raises(CheckoutError, match=reason):
        prepare(repos.clone, requested, root=repos.root)
    assert [w.path for w in worktrees(repos.clone)] == [repos.clone.resolve()]


def test_runs_at_different_commits_get_distinct_trees_at_the_same_time(repos: Repos) -> None:
    wanted = [repos.shas[0], repos.shas[1], repos.shas[0], repos.shas[1]]
    with ThreadPoolExecutor(len(wanted)) as pool:
        checkouts = list(pool.map(lambda sha: prepare(repos.clone, sha, root=repos.root), wanted))
    assert len({c.tree for c in checkouts}) == len(wanted)
    assert [version(c.tree) for c in checkouts] == ["0", "1", "0", "1"]
    with ThreadPoolExecutor(len(checkouts)) as pool:
        list(pool.map(remove, checkouts))
    assert [w.path for w in worktrees(repos.clone)] == [repos.clone.resolve()]
    assert list(repos.root.iterdir()) == []


def test_the_checkout_of_a_crashed_run_is_removed_by_the_next_run(repos: Repos) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = repos.root / "stale-run"
    repos.root.mkdir(parents=True)
    git(repos.clone, "worktree", "add", "--detach", "--lock", "--reason", owner_reason(dead.pid), str(stale), "HEAD")
    live = prepare(repos.clone, repos.shas[1], root=repos.root)  # a live run's tree is left alone ...
    nxt = prepare(repos.clone, repos.shas[0], root=repos.root)  # ... the dead one's is removed
    assert not stale.exists()
    assert {w.path for w in worktrees(repos.clone)} == {repos.clone.resolve(), live.tree, nxt.tree}
    remove(live)
    remove(nxt)


def test_a_checkout_whose_clone_was_deleted_is_removed_by_the_next_run(repos: Repos, tmp_path: Path) -> None:
    """A worker deletes a run's clone (the pull step's) also when the run crashed: its tree is an orphan."""
    other = tmp_path / "other-clone"
    subprocess.run(["git", "clone", "-q", f"file://{repos.origin}", str(other)], check=True)
    orphan = prepare(other, repos.shas[0], root=repos.root)
    live = prepare(repos.clone, repos.shas[1], root=repos.root)
    subprocess.run(["rm", "-rf", str(other)], check=True)
    nxt = prepare(repos.clone, None, root=repos.root)  # any run, even one in place, cleans up
    assert not nxt.per_run
    assert not orphan.tree.exists() and version(live.tree) == "1"
    remove(live)


def test_settings_point_into_the_tree_and_the_config_is_read_from_the_commit(repos: Repos) -> None:
    from flows.params import ValidationRequest
    from tasks.checkout import settings_in_tree

    config = repos.clone / "stagecheck.toml"
    config.write_text('project = "demo-project"\nregion = "europe-west1"\nregistry = "127.0.0.1:5000/x"\n'
                      '[[services]]\nname = "svc"\nsource_dir = "svc"\n')
    git(repos.clone, "commit", "-qam", "config")
    request = ValidationRequest(config=str(config), git_sha=repos.shas[0])
    settings = request.load({})
    checkout = Checkout(sha=repos.shas[0], tree=repos.root / "t", clone=repos.clone.resolve(), per_run=True, how="")
    (repos.root / "t" / "svc").mkdir(parents=True)
    (repos.root / "t" / "stagecheck.toml").write_text(config.read_text().replace('"svc"\nsource_dir', '"svc2"\nsource_dir'))
    moved = settings_in_tree(request.model_copy(update={"config": str(config)}), settings, checkout)
    assert [s.name for s in moved.services] == ["svc2"]  # the commit's config, not the clone's
    assert moved.services[0].source_dir == (repos.root / "t" / "svc").resolve()
    assert moved.repo_root == (repos.root / "t").resolve()
    assert moved.report_dir == settings.report_dir  # reports stay with the clone


async def test_the_checkout_gate_fails_on_an_unusable_config_at_the_commit_and_removes_its_tree(repos: Repos) -> None:
    from flows.params import ValidationRequest
    from stagecheck.model import Status
    from tasks.checkout import checkout_commit

    config = repos.clone / "stagecheck.toml"
    config.write_text('project = "demo-project"\nregion = "europe-west1"\nregistry = "127.0.0.1:5000/x"\n'
                      '[[services]]\nname = "svc"\nsource_dir = "svc"\n')
    git(repos.clone, "commit", "-qam", "config")
    request = ValidationRequest(config=str(config), git_sha=repos.shas[0])  # its config is a comment only
    result, done = await checkout_commit.fn(request, request.load({}), ["svc"], "t1")
    assert result.status is Status.FAIL and done is None
    assert f"the config at commit {repos.shas[0][:12]} is invalid" in result.summary
    assert [w.path for w in worktrees(repos.clone)] == [repos.clone.resolve()]
    from stagecheck.checkout import default_root  # where the task puts per-run trees

    assert not [p for p in default_root().iterdir() if p.name.startswith(repos.shas[0][:12])]
