"""curate.train: PS3-style local-contrast pre-training on curate shards (see README, 'Training')."""
