"""Where recordings live after they are finalized: the recordings folder or an S3-compatible bucket, optionally
encrypted at rest (docs/storage.md).  Every read or delete of recording audio goes through ``Storage``.

``crypto`` (the encrypted form, pure), ``s3`` (the bucket, botocore), ``store`` (``Storage``, ``Blob``),
``outbox`` (the daemon's uploads: queued at finalize, retried, verified, local copy removed after the grace).
"""

from callrec.storage.crypto import BadCiphertext, WrongMasterKey
from callrec.storage.s3 import ObjectMissing, StorageUnavailable
from callrec.storage.store import Blob, KeyProblem, Storage, as_storage, in_thread, load_master_key

__all__ = ["BadCiphertext", "Blob", "KeyProblem", "ObjectMissing", "Storage", "StorageUnavailable", "WrongMasterKey",
           "as_storage", "in_thread", "load_master_key"]
