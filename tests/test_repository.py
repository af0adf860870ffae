"""A service repository stagecheck does not live in (stagecheck.repository): URLs refused when they carry
credentials, the commit checked out for one run from a local repository and from a git HTTP server that
wants a token (127.0.0.1), the token never in a URL, a file of the cache clone, or a message."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from stagecheck.checkout import remove
from stagecheck.repository import (
    RepositoryError,
    auth_env,
    cache_clone,
    canonical_url,
    check_out,
    check_url,
    secret_forms,
)
from tasks.repository import block_token
from tests.git_http_server import git_http_server

TOKEN = "s3cr3t-token-4242"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.email=ci@example.com", "-c", "user.name=ci", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def service_repo(root: Path) -> tuple[Path, list[str]]:
    """A repository with two commits: `stagecheck.toml` says which (1, then 2)."""
    repo = root / "shop"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    shas = []
    for n in (1, 2):
        (repo / "stagecheck.toml").write_text(f"# commit {n}\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"commit {n}")
        shas.append(git(repo, "rev-parse", "HEAD"))
    return repo, shas


@pytest.mark.parametrize("url", ["https://user:pw@github.com/acme/shop.git", "https://tok@github.com/acme/shop",
                                 "http://git.example.com/acme/shop.git", "ftp://example.com/x", "shop", ""])
def test_urls_with_credentials_plain_http_or_no_scheme_are_refused(url: str) -> None:
    with pytest.raises(RepositoryError) as err:
        check_url(url)
    assert "pw" not in str(err.value)


@pytest.mark.parametrize("url", ["https://github.com/acme/shop.git", "git@github.com:acme/shop.git",
                                 "ssh://git@github.com/acme/shop.git", "file:///srv/git/shop", "/srv/git/shop",
                                 "http://127.0.0.1:8080/shop"])
def test_git_urls_are_accepted(url: str) -> None:
    assert check_url(url) == url


def test_a_token_goes_to_git_as_an_http_header_in_the_environment() -> None:
    env = auth_env(TOKEN)
    assert env["GIT_CONFIG_KEY_0"] == "http.extraHeader"
    assert env["GIT_CONFIG_VALUE_0"].startswith("Authorization: Basic ")
    assert TOKEN not in env["GIT_CONFIG_VALUE_0"]  # base64 of x-access-token:TOKEN
    assert env["GIT_CONFIG_VALUE_0"].removeprefix("Authorization: Basic ") in secret_forms(TOKEN)
    assert auth_env(None) == {}
    assert canonical_url("https://h/acme/shop.git/") == canonical_url("https://h/acme/shop")


def test_block_token_reads_a_secret_value_or_a_token_field() -> None:
    class SecretLike:
        def get(self) -> str:
            return " abc123 "

    class GitHubLike:
        token = SecretStr("ghp-like")

    assert block_token(SecretLike()) == "abc123"
    assert block_token(GitHubLike()) == "ghp-like"
    with pytest.raises(RepositoryError):
        block_token(object())


def test_an_earlier_commit_of_a_local_repository_is_checked_out_for_the_run(tmp_path: Path) -> None:
    repo, (first, second) = service_repo(tmp_path)
    root = tmp_path / "cache" / "checkouts"

    tree = check_out(repo.as_uri(), first[:10], root=root)  # file://, an abbreviated id
    again = check_out(repo.as_uri() + "/", "main", root=root)  # a branch; the same repository's cache clone
    by_path = check_out(str(repo), None, root=root)  # a path, its HEAD

    assert tree.checkout.sha == first and tree.checkout.per_run
    assert tree.config("stagecheck.toml").read_text() == "# commit 1\n"
    assert again.checkout.sha == second and again.checkout.clone == tree.checkout.clone
    assert tree.checkout.clone == cache_clone(repo.as_uri(), root.parent / "repos")
    assert by_path.checkout.sha == second
    with pytest.raises(RepositoryError, match="inside the repository"):
        tree.config("../outside.toml")
    with pytest.raises(RepositoryError, match="not found"):
        tree.config("services/missing.toml")
    remove(tree.checkout)
    remove(again.checkout)
    remove(by_path.checkout)
    assert list(root.iterdir()) == []
    with pytest.raises(RepositoryError, match="not found"):
        check_out(str(repo), "0" * 40, root=root)


def test_a_private_repository_is_fetched_over_http_with_the_token_and_never_shows_it(tmp_path: Path) -> None:
    served, (first, _second) = service_repo(tmp_path / "served")
    subprocess.run(["git", "-C", str(served), "config", "uploadpack.allowAnySHA1InWant", "true"], check=True)
    root = tmp_path / "cache" / "checkouts"
    with git_http_server(served.parent, "ci-bot", TOKEN) as server:
        url = f"{server.url}/shop"
        with pytest.raises(RepositoryError) as refused:
            check_out(url, first, root=root)  # no token: the server answers 401
        tree = check_out(url, first, token=f"ci-bot:{TOKEN}", root=root)

    assert server.unauthorised >= 1
    assert "not found" in str(refused.value) and url in str(refused.value)
    assert tree.checkout.sha == first
    assert tree.config("stagecheck.toml").read_text() == "# commit 1\n"
    assert not any(TOKEN in path or "ci-bot" in path for path in server.paths)
    assert TOKEN not in tree.checkout.how and TOKEN not in str(refused.value)
    stored = [p for p in tree.checkout.clone.rglob("*") if p.is_file() and p.stat().st_size < 1_000_000]
    assert stored and not any(TOKEN.encode() in p.read_bytes() for p in stored)  # the cache clone kept no credential
    remove(tree.checkout)
