"""The torch checkpoint folder layout (what the commands list as steps)."""

from torchvae import checkpoint as ckpt_lib


def test_checkpoint_steps_lists_only_finished_files(tmp_path):
    ck = tmp_path / "checkpoints"
    assert ckpt_lib.checkpoint_steps(ck) == []
    ck.mkdir()
    for step in (3, 12):
        (ck / f"step_{step:09d}.pt").write_bytes(b"")
    (ck / ".step_000000015.pt.tmp").write_bytes(b"")  # a killed write is not a checkpoint
    (ck / "8").mkdir()  # an Orbax step folder is not ours
    assert ckpt_lib.checkpoint_steps(ck) == [3, 12]
