"""Auditors' CLI and library: export topics to an archive, replay, verify, report (read-only).

The public surface: run an audit over an archive or the Kafka topics and read its findings.
"""

from services.audit.archive import ArchiveError, ArchiveWriter, Manifest, SegmentInfo
from services.audit.engine import Finding, PartitionAuditor, PartitionResult, campaign_key
from services.audit.fold import CampaignFold
from services.audit.rules import RULES
from services.audit.sources import AuditRun, KafkaSourceError, audit_archive, audit_kafka

__all__ = [
    "RULES",
    "ArchiveError",
    "ArchiveWriter",
    "AuditRun",
    "CampaignFold",
    "Finding",
    "KafkaSourceError",
    "Manifest",
    "PartitionAuditor",
    "PartitionResult",
    "SegmentInfo",
    "audit_archive",
    "audit_kafka",
    "campaign_key",
]
