"""Run inside a MindFormers twin: the logits of MindFormers' own LlamaForCausalLM (the class the guides' yamls train
Qwen2 and Qwen2.5 with) on the checkpoint the stack's convert_weight.py wrote, against transformers'
Qwen2ForCausalLM on the HF weights it was converted from. Prints the largest absolute difference.

    python mindformers_logits.py HF_DIR CKPT
"""

import json
import sys

import numpy as np


def main(hf_dir: str, ckpt: str) -> None:
    cfg = json.load(open(f"{hf_dir}/config.json"))
    ids = np.array([[5, 17, 99, 400, 1024, 7, 151643, 3, 12, 8, 151644, 42]], dtype=np.int32)

    import torch
    import transformers

    reference = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        want = reference(torch.from_numpy(ids.astype(np.int64))).logits.numpy()

    import mindspore
    from mindformers.models.llama import LlamaConfig, LlamaForCausalLM

    mindspore.set_context(mode=mindspore.PYNATIVE_MODE)
    mindspore.set_device("CPU")
    config = LlamaConfig(
        batch_size=1,
        seq_length=ids.shape[1],
        hidden_size=cfg["hidden_size"],
        num_layers=cfg["num_hidden_layers"],
        num_heads=cfg["num_attention_heads"],
        n_kv_heads=cfg["num_key_value_heads"],
        vocab_size=cfg["vocab_size"],
        intermediate_size=cfg["intermediate_size"],
        qkv_has_bias=True,
        rms_norm_eps=cfg["rms_norm_eps"],
        theta=cfg["rope_theta"],
        max_position_embedding=cfg["max_position_embeddings"],
        compute_dtype="float32",
        layernorm_compute_type="float32",
        softmax_compute_type="float32",
        rotary_dtype="float32",
        param_init_type="float32",
        use_past=False,
        use_flash_attention=False,
        fused_rms_norm=False,  # the twin's yaml values (llm/mindformers/cpu.py)
        use_rope_slice=True,
    )
    model = LlamaForCausalLM(config)
    model.set_train(False)
    not_loaded, _ = mindspore.load_param_into_net(model, mindspore.load_checkpoint(ckpt))
    assert not not_loaded, f"parameters the checkpoint does not have: {not_loaded}"
    out = model(mindspore.Tensor(ids))
    got = (out[0] if isinstance(out, tuple) else out).asnumpy().reshape(want.shape)
    print(f"max |logits difference| {float(np.abs(got - want).max()):.3e} over {want.size} logits")


if __name__ == "__main__":
    main(*sys.argv[1:3])
