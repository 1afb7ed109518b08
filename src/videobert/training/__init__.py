"""VideoBERT pretraining: examples of the three regimes streamed from a work directory (`data`) and the
`videobert pretrain` stage on the Hugging Face Trainer (`pretrain`)."""
