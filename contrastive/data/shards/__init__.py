"""WebDataset shards: the folder format (``format``), the converter (``writer``) and the reader
(``reader``, ``dataset=shards``)."""
