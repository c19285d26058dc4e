"""HTML reports with figures, and the methods text to cite (``participant``, ``group``, ``citation``).

Nothing is imported here: the preprocessing's reportlets import ``figures`` alone, and a package
that pulled in every report would bring the preprocessing back through the methods text."""
