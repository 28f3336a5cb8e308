"""Run by test_ddp.py under `accelerate launch --multi_gpu --num_processes 2`: a short SparseTrainer
run whose final masks each rank writes to `<output_dir>/masks_rank<R>.safetensors`.

    ddp_train.py OUTPUT_DIR [--kill-in-checkpoint | --resume]

`--kill-in-checkpoint` saves every 4 steps and SIGKILLs rank 1 while it writes its part of the second
checkpoint (its RNG state), so the other rank is left waiting for it; `--resume` continues such a run
with `resume_from_checkpoint=True`.
"""

import os
import signal
import sys

import torch
from safetensors.torch import save_file
from transformers import Trainer

sys.path.insert(0, os.path.dirname(__file__))

from nn_prune_ext import SparseArgs, SparseTrainer, iter_mask_scores  # noqa: E402

from conftest import tiny_model  # noqa: E402
from test_trainer import eval_masks, tiny_dataset, training_args  # noqa: E402

SAVE_STEPS = 4


def _kill_rank_one_in_the_second_checkpoint() -> None:
    original, calls = Trainer._save_rng_state, []

    def save_rng_state(self, output_dir):
        calls.append(output_dir)
        if len(calls) == 2 and self.args.process_index == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, output_dir)

    Trainer._save_rng_state = save_rng_state


def main(output_dir: str, mode: str | None) -> None:
    sparse_args = SparseArgs.hybrid(2.0, attention_block_rows=16, attention_block_cols=16, final_threshold=0.5,
                                    initial_warmup=1, final_warmup=2)
    saving = dict(save_strategy="steps", save_steps=SAVE_STEPS) if mode else {}
    args = training_args(output_dir, max_steps=8, per_device_train_batch_size=4, learning_rate=5e-3, **saving)
    trainer = SparseTrainer(model=tiny_model("bert"), args=args, train_dataset=tiny_dataset(), sparse_args=sparse_args)
    if mode == "--kill-in-checkpoint":
        _kill_rank_one_in_the_second_checkpoint()
    trainer.train(resume_from_checkpoint=True if mode == "--resume" else None)
    rank = trainer.args.process_index
    tensors = {f"mask_{i}": mask.contiguous() for i, mask in enumerate(eval_masks(trainer.model))}
    tensors.update({f"scores_{i}": s.scores.detach().contiguous() for i, s in enumerate(iter_mask_scores(trainer.model))})
    tensors["world_size"] = torch.tensor([trainer.args.world_size])
    if mode == "--resume":
        tensors["resumed_from_step"] = torch.tensor([int(trainer._resumed_from.rsplit("-", 1)[1])])
    save_file(tensors, os.path.join(output_dir, f"masks_rank{rank}.safetensors"))
    # Leave the process group before exiting: a gloo rank that exits with it open can abort at shutdown.
    trainer.accelerator.end_training()
    # Even then, a gloo rank once aborted in a C++ destructor at interpreter exit ("terminate called without an
    # active exception", status -6) after writing its masks: everything is written, so skip the destructors.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
