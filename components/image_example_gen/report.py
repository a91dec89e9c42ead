"""What an ingestion found, and the files it writes: report.json and quarantine.csv.

The Beam graph's last step saves an IngestResults (tallies, duplicate groups, quarantine, files
written); the launcher loads it, takes back the images TensorFlow could not decode (`drop`), and
writes the report once every file went through and every decode was checked.
"""

import csv
import dataclasses
import io
import json
import os
import pickle
from typing import Any, Dict, List, Tuple

from apache_beam.io.filesystems import FileSystems

from fakedetect.components import features
from fakedetect.components.image_checks import ImageRejected
from fakedetect.components.image_example_gen import profile as profile_lib
from fakedetect.components.image_example_gen import reading
from fakedetect.components.image_example_gen import tfrecord

REPORT_FILE = 'report.json'
QUARANTINE_FILE = 'quarantine.csv'


@dataclasses.dataclass
class IngestResults:
  profile: Dict[str, Any]  # a profile.ProfileFn accumulator
  duplicates: List[Dict[str, Any]]  # profile.duplicate_groups
  quarantined: List[Dict[str, str]]  # reading.quarantine_record
  written: List[tfrecord.Written]  # the TFRecord files, before `tfrecord.finalize` names them

  def save(self, path: str) -> None:
    with FileSystems.create(path) as f:
      pickle.dump(dataclasses.astuple(self), f, pickle.HIGHEST_PROTOCOL)

  @classmethod
  def load(cls, path: str) -> 'IngestResults':
    with FileSystems.open(path) as f:
      return cls(*pickle.load(f))

  def drop(self, failures: List[Tuple[reading.Meta, ImageRejected]]) -> None:
    """Takes back images found undecodable after they were counted: they are quarantined."""
    for meta, rejected in failures:
      profile_lib.ProfileFn.fold(self.profile, meta, -1)
      self.quarantined.append(reading.quarantine_record(meta['path'], rejected))
    # Identical bytes decode alike: a failed file's duplicates all failed with it.
    failed = {meta['hash'] for meta, _ in failures}
    self.duplicates = [g for g in self.duplicates if g['content_hash'] not in failed]

  def write_report(self, report_uri: str, header: Dict[str, Any], split_names: List[str]
                   ) -> Dict[str, Any]:
    """Writes report.json (header, then what was found) and quarantine.csv; returns the report."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    counts = {s: dict.fromkeys(features.LABEL_NAMES, 0) for s in split_names}
    for split, by_class in self.profile['counts'].items():
      counts[split].update(by_class)
    classes = {c: self.profile['classes'].get(c) for c in features.LABEL_NAMES}
    reasons: Dict[str, int] = {}
    for record in self.quarantined:
      reasons[record['reason']] = reasons.get(record['reason'], 0) + 1
    duplicates = sorted(self.duplicates, key=lambda g: g['paths'][0])
    per_class = {c: profile_lib.class_profile(t) for c, t in classes.items() if t}
    warnings = profile_lib.bias_warnings(per_class) + profile_lib.duplicate_warnings(duplicates)
    for split, by_class in counts.items():
      missing = [c for c, n in by_class.items() if not n]
      if missing and sum(by_class.values()):
        warnings.append(f"Split {split!r} has no {' or '.join(missing)} image: its metrics "
                        'will be one-sided.')
    tallies = lambda table: {c: dict(sorted((t or {}).get(table, {}).items()))
                             for c, t in classes.items()}
    report = dict(header)
    report.update({
        'ingested': sum(sum(by_class.values()) for by_class in counts.values()),
        'quarantined': sorted(self.quarantined, key=lambda r: r['path']),
        'quarantine_reasons': dict(sorted(reasons.items())),
        'counts': counts,
        'sources': tallies('sources'),
        'formats': tallies('formats'),
        'modes': tallies('modes'),
        'profile': per_class,
        'duplicates': duplicates,
        'warnings': warnings,
    })
    with tf.io.gfile.GFile(os.path.join(report_uri, REPORT_FILE), 'w') as f:
      f.write(json.dumps(report, indent=2))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(['path', 'reason', 'detail'])
    writer.writerows([r['path'], r['reason'], r['detail']] for r in report['quarantined'])
    with tf.io.gfile.GFile(os.path.join(report_uri, QUARANTINE_FILE), 'w') as f:
      f.write(buffer.getvalue())
    return report
