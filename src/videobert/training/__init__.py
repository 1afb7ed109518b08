"""VideoBERT pretraining: examples of the three regimes streamed from a work directory (`data`), the objectives
trained on them (`objectives`: masked words, masked visual words, alignment, masked clips) and the
`videobert pretrain` stage on the Hugging Face Trainer (`pretrain`)."""
