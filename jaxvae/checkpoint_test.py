"""The JAX checkpoint folder layout, read without Orbax (what the commands list as steps)."""

from jaxvae import checkpoint as ckpt_lib


def test_checkpoint_steps_lists_only_committed_orbax_steps(tmp_path):
    ck = tmp_path / "checkpoints"
    assert ckpt_lib.checkpoint_steps(ck) == []  # no folder: no steps, nothing created
    assert not ck.exists()
    for step in (8, 16):
        (ck / str(step)).mkdir(parents=True)
        (ck / str(step) / "commit_success.txt").write_text("")
    (ck / "24.orbax-checkpoint-tmp-1").mkdir()  # an unfinished save is not a checkpoint
    (ck / "32").mkdir()  # no commit marker: not finished either
    (ck / "step_000000003.pt").write_bytes(b"")  # another framework's file is not ours
    assert ckpt_lib.checkpoint_steps(ck) == [8, 16]
