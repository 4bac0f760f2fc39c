"""curate: turn raw high-resolution images into region-caption corpora."""

__version__ = "0.1.0"
