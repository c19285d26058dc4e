"""The one owner of the outputs: ``layout`` names every file, ``records`` is one T1w's summary,
``columns`` and ``sidecars`` say what the files hold, ``session_files`` and ``dataset_files`` write them."""
