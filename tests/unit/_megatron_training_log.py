"""Print the iteration log line of the Megatron-LM found on sys.path, made by that version's own ``training_log``.

Run as a script with an extracted Megatron-LM tree first on PYTHONPATH (the test does, in a subprocess): one process,
gloo, npubox's CPU shims (``torch.cuda`` tensors on the CPU). Arguments come from Megatron's own parse_args +
validate_args; the step's values are fixed so the test knows what the line must say.
"""

import os
import sys
import time

os.environ.update(
    WORLD_SIZE="1",
    RANK="0",
    LOCAL_RANK="0",
    CUDA_DEVICE_MAX_CONNECTIONS="1",
    MASTER_ADDR="127.0.0.1",
    MASTER_PORT=sys.argv[1],
)
import torch  # noqa: E402

# Megatron before the shims: core_r0.8.0 torch.jit.scripts functions at import, which must see torch's own factories.
from megatron.core import parallel_state  # noqa: E402
from megatron.training import arguments, global_vars, training  # noqa: E402

from llm.accel import install_cpu_shims  # noqa: E402

install_cpu_shims()
torch.distributed.init_process_group("gloo", rank=0, world_size=1)

sys.argv = [
    "pretrain_gpt.py",
    "--num-layers",
    "2",
    "--hidden-size",
    "64",
    "--num-attention-heads",
    "4",
    "--seq-length",
    "32",
    "--max-position-embeddings",
    "32",
    "--micro-batch-size",
    "2",
    "--global-batch-size",
    "8",
    "--train-iters",
    "2000",
    "--lr",
    "1.25e-6",
    "--log-throughput",
    "--swiglu",
    "--tokenizer-type",
    "NullTokenizer",
    "--vocab-size",
    "1000",
    "--log-interval",
    "1",
]
args = arguments.parse_args()
arguments.validate_args(args, {})
args.padded_vocab_size = 1024
args.consumed_train_samples = 640
global_vars._GLOBAL_ARGS = args
from megatron.core.num_microbatches_calculator import init_num_microbatches_calculator  # noqa: E402

init_num_microbatches_calculator(0, None, args.global_batch_size, args.micro_batch_size, 1)
global_vars._set_timers(args)
parallel_state.initialize_model_parallel(1, 1)
global_vars.get_timers()("interval-time", log_level=0).start(barrier=True)
time.sleep(0.05)
training.training_log(
    {"lm loss": torch.tensor([1.602336], device="cuda")},
    {},
    1.25e-6,
    None,
    10,
    loss_scale=1.0,
    report_memory_flag=False,
    skipped_iter=0,
    grad_norm=1.2345,
    params_norm=None,
    num_zeros_in_grad=None,
)
sys.stdout.flush()
os._exit(0)  # skip gloo's teardown
