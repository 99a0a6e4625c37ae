"""atomic_save_pretrained: the folder holds the previous model or the complete new one, never a part."""
import pytest

from relate_fast.checkpoint import atomic_save_pretrained


class _Saves:
    def __init__(self, name, fail=False):
        self.name, self.fail = name, fail

    def save_pretrained(self, folder):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{self.name}.txt").write_text(self.name)
        if self.fail:
            raise OSError("disk full")


def test_new_folder_replaces_the_old_one_whole(tmp_path):
    out = tmp_path / "final"
    atomic_save_pretrained(out, _Saves("model_a"), _Saves("tok_a"))
    atomic_save_pretrained(out, _Saves("model_b"), _Saves("tok_b"))
    assert sorted(p.name for p in out.iterdir()) == ["model_b.txt", "tok_b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["final"]  # nothing left beside it


def test_a_failed_save_leaves_the_previous_folder(tmp_path):
    out = tmp_path / "final"
    atomic_save_pretrained(out, _Saves("model_a"), _Saves("tok_a"))
    with pytest.raises(OSError, match="disk full"):
        atomic_save_pretrained(out, _Saves("model_b"), _Saves("tok_b", fail=True))
    assert sorted(p.name for p in out.iterdir()) == ["model_a.txt", "tok_a.txt"]
    atomic_save_pretrained(out, _Saves("model_c"), _Saves("tok_c"))  # the leftover temporary is cleared
    assert sorted(p.name for p in out.iterdir()) == ["model_c.txt", "tok_c.txt"]
