"""Stage 6, "Logs": what the new revision logged since the deploy started, and whether it is new.

Pure functions over `LogRecord`s, one module per step:

- `records`: Cloud Logging API entries -> `LogRecord` (`record_from_entry_dict`), and `group_tracebacks`,
  which joins the one-entry-per-line pieces of a multi-line traceback into one record;
- `signatures`: `normalise_signature`, `crash_kind`, and `summarise` (counts by severity, groups by
  signature, crash signatures, the 5xx rate from request logs, cold-start 503/429 apart);
- `comparison`: `compare` sorts the groups into new / pre-existing (seen on the previous revision over an
  equal window) / tolerated (configured) / below the severity threshold;
- `judgement`: `judge_logs` turns that into the "logs" StageResult with criteria and evidence.
"""

from stagecheck.log_analysis.comparison import LogComparison, compare, compile_tolerated
from stagecheck.log_analysis.judgement import (
    STAGE_NAME,
    example_line,
    judge_logs,
    judge_logs_unavailable,
    top_signatures,
)
from stagecheck.log_analysis.records import (
    SEVERITIES,
    LogRecord,
    group_tracebacks,
    parse_timestamp,
    record_from_entry_dict,
    severity_rank,
)
from stagecheck.log_analysis.signatures import (
    LogSummary,
    SignatureGroup,
    crash_kind,
    effective_severity,
    normalise_signature,
    previous_window,
    summarise,
)

__all__ = [
    "SEVERITIES",
    "STAGE_NAME",
    "LogComparison",
    "LogRecord",
    "LogSummary",
    "SignatureGroup",
    "compare",
    "compile_tolerated",
    "crash_kind",
    "effective_severity",
    "example_line",
    "group_tracebacks",
    "judge_logs",
    "judge_logs_unavailable",
    "normalise_signature",
    "parse_timestamp",
    "previous_window",
    "record_from_entry_dict",
    "severity_rank",
    "summarise",
    "top_signatures",
]
