"""HTML reports with figures (``participant``, ``group``): readers of the output folder, drawn with
``bids_pscore.viz``. Nothing is imported here, so that importing one report imports no other."""
