"""HTML reports with figures, and the methods text to cite."""

from .citation import write_citation
from .group import write_group_report
from .participant import write_subject_reports

__all__ = ["write_citation", "write_group_report", "write_subject_reports"]
