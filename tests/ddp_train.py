"""Run by test_ddp.py under `accelerate launch --multi_gpu --num_processes 2`: a short SparseTrainer
run whose final masks each rank writes to `<output_dir>/masks_rank<R>.safetensors`."""

import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))

from nn_prune_ext import SparseArgs, SparseTrainer, iter_mask_scores  # noqa: E402

from conftest import tiny_model  # noqa: E402
from test_trainer import eval_masks, tiny_dataset, training_args  # noqa: E402


def main(output_dir: str) -> None:
    sparse_args = SparseArgs.hybrid(2.0, attention_block_rows=16, attention_block_cols=16, final_threshold=0.5,
                                    initial_warmup=1, final_warmup=2)
    args = training_args(output_dir, max_steps=8, per_device_train_batch_size=4, learning_rate=5e-3)
    trainer = SparseTrainer(model=tiny_model("bert"), args=args, train_dataset=tiny_dataset(), sparse_args=sparse_args)
    trainer.train()
    rank = trainer.args.process_index
    tensors = {f"mask_{i}": mask.contiguous() for i, mask in enumerate(eval_masks(trainer.model))}
    tensors.update({f"scores_{i}": s.scores.detach().contiguous() for i, s in enumerate(iter_mask_scores(trainer.model))})
    tensors["world_size"] = torch.tensor([trainer.args.world_size])
    save_file(tensors, os.path.join(output_dir, f"masks_rank{rank}.safetensors"))
    # Leave the process group before exiting: a gloo rank that exits with it open can abort at shutdown.
    trainer.accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1])
