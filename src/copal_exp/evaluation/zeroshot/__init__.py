"""Zero-shot accuracy through lm-evaluation-harness: the tasks as data (:mod:`.tasks`), their datasets
offline (:mod:`.offline`), and the harness run on a model in memory (:mod:`.harness`)."""
