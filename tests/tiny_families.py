"""Tiny random models of eight causal-LM families (the architecture tests and the sharing tests use them)."""

import torch

SEQLEN, WINDOW = 48, 8  # every sliding window is shorter than the sequence
LAYER_TYPES = ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]


def build(family: str):
    import transformers as t

    common = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  max_position_embeddings=256)
    configs = {
        "llama": lambda: t.LlamaForCausalLM(t.LlamaConfig(**common, num_key_value_heads=2)),
        "mistral": lambda: t.MistralForCausalLM(t.MistralConfig(**common, num_key_value_heads=2, sliding_window=WINDOW)),
        "qwen3": lambda: t.Qwen3ForCausalLM(t.Qwen3Config(**common, num_key_value_heads=2, head_dim=16,
                                                          sliding_window=WINDOW, use_sliding_window=True,
                                                          layer_types=LAYER_TYPES)),
        "gemma3": lambda: t.Gemma3ForCausalLM(t.Gemma3TextConfig(**common, num_key_value_heads=2, head_dim=16,
                                                                 sliding_window=WINDOW, layer_types=LAYER_TYPES)),
        "opt": lambda: t.OPTForCausalLM(t.OPTConfig(vocab_size=256, hidden_size=64, ffn_dim=128, num_hidden_layers=4,
                                                    num_attention_heads=4, max_position_embeddings=256,
                                                    word_embed_proj_dim=64)),
        "gpt_neox": lambda: t.GPTNeoXForCausalLM(t.GPTNeoXConfig(**common)),
        "phi": lambda: t.PhiForCausalLM(t.PhiConfig(**common)),
        "gpt2": lambda: t.GPT2LMHeadModel(t.GPT2Config(vocab_size=256, n_embd=64, n_layer=4, n_head=4, n_positions=256,
                                                       bos_token_id=0, eos_token_id=0)),
    }
    torch.manual_seed(0)
    model = configs[family]().eval()
    model.config.use_cache = False
    return model


FAMILIES = ["llama", "mistral", "qwen3", "gemma3", "opt", "gpt_neox", "phi", "gpt2"]
