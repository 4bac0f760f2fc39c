"""Pure functions of the pipeline: box selection, caption hygiene, question rules, crops, routing,
image decoding and prompt building. Arrays and strings in, arrays and strings out; no Ray, no models."""
