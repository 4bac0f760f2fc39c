"""Test and benchmark helpers: random-weight models with real architectures, tiny SAMs and parity
checks against the reference generators. Never used to make a corpus: their outputs carry no meaning."""
