"""The five real datasets, read from their official download layouts.

* :mod:`~fgbench.data.official.catalog` — which datasets, their sizes, folders and download instructions
* :mod:`~fgbench.data.official.readers` — one reader per list format: ``folder -> Listing``
* :mod:`~fgbench.data.official.listing` — the list-file helpers and :class:`Listing`, problems and size checks
* :mod:`~fgbench.data.official.dataset` — :class:`OfficialDataset`: reader + sizes + cache = a ``DatasetSpec``
* :mod:`~fgbench.data.official.images` — decoding image files; the splits over the listed files
* :mod:`~fgbench.data.official.cache` — the decoded uint8 cache (``fgbench data cache``)
* :mod:`~fgbench.data.official.check` — ``fgbench data check``: every problem of a dataset in one pass
"""
