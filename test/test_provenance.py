"""code_commit: the commit a run's code came from, on a real temporary git repository."""
import subprocess

from clipseg_training.provenance import code_commit


def _git(repo, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


def test_code_commit_names_the_checkout_and_marks_changes(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / "pkg" / "a.py").write_text("x = 1\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "one")
    sha = _git(repo, "rev-parse", "--short", "HEAD")
    assert code_commit(repo / "pkg") == sha
    (repo / "pkg" / "new.py").write_text("untracked files do not count\n")
    assert code_commit(repo / "pkg") == sha
    (repo / "pkg" / "a.py").write_text("x = 2\n")
    assert code_commit(repo / "pkg") == sha + "-dirty"


def test_code_commit_outside_a_checkout_is_none(tmp_path):
    assert code_commit(tmp_path) is None
