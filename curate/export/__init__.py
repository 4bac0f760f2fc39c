"""Exports of a finished corpus into the formats other trainers read (PS3's two-set WebDataset)."""
