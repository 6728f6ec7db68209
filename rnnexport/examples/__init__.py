"""Example models that look like real deployments, in the catalog as model specs
(``rnnexport/catalog/*.toml``): `text_classifier`, `keyword_spotter`, `seq2seq_encoder`,
`seq2seq_decoder`. `text_classifier`'s weights are trained by ``scripts/train_examples.py``."""
