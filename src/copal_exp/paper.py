"""The COPAL paper's reference figures (LLaMA-7B, Table 2; docs/design.md), printed beside our tables."""

# pattern -> method -> (a_bwt, m_bwt, a_ppl, m_ppl); None where the paper prints WS or "–"
TABLE2_LLAMA7B: dict[str, dict[str, tuple]] = {
    "unstructured 50%": {
        "dense": (None, None, 7.714, 10.120),
        "magnitude": ("WS", "WS", 30.246, 49.670),
        "sparsegpt": (0.591, 0.690, 10.166, 13.253),
        "wanda": (0.569, 1.072, 9.991, 13.626),
        "copal": (0.016, 0.032, 9.728, 12.585),
    },
    "2:4": {
        "sparsegpt": (4.365, 6.391, 15.744, 21.771),
        "wanda": (1.667, 3.192, 16.154, 23.266),
        "copal": (0.009, 0.075, 15.335, 21.159),
    },
    "4:8": {
        "sparsegpt": (1.929, 3.045, 11.924, 15.884),
        "wanda": (0.771, 1.645, 11.929, 16.631),
        "copal": (0.038, 0.075, 11.734, 15.532),
    },
}
