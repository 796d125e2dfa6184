"""Checkpoints of a continual-learning run, written so a kill never
corrupts them, into any folder `tf.io.gfile` reaches.

A run folder holds `config.json`, committed checkpoints in
`checkpoints/<folder>/` and a `LATEST` file naming the newest one. The run
folder may be a local path or a URL of any file system `tf.io.gfile` reaches
(`gs://bucket/runs/pam` on a TPU VM, whose disk a pre-emption loses;
`ram://` in the tests). Every file of it is read and written through
`tf.io.gfile`; on a local disk the files and folders are also `fsync`ed.

A commit never renames a folder, since on object stores (GCS, S3) a folder
rename copies object after object and is not atomic. It goes:

1. The checkpoint is written into `checkpoints/<folder>/`, a folder that
   `LATEST` does not name: `<name>` (e.g. `task_0002`), or `again-<name>`
   when `LATEST` already names `<name>` (a checkpoint committed again under
   its name), so a committed checkpoint is never written over. A leftover
   of that name (the remains of a killed write) is deleted first. (No name
   is the start of another: `ram://` lists and deletes by prefix.)
2. `manifest.json` records the SHA-256 sum of each of its files.
3. The commit point: `LATEST` is replaced by one naming the new folder,
   written as `LATEST.tmp-<pid>` and renamed over it. It is a single small
   file: a local rename is atomic, and on an object store the rename writes
   one object, which appears whole or not at all.
4. The other folders of `checkpoints/` (the previous checkpoint, leftovers)
   and any `LATEST.tmp-*` left by a killed commit are deleted.

A run killed at any instant therefore leaves `LATEST` naming either the
previous checkpoint, untouched since the new one went elsewhere, or the new
one, complete and sealed before `LATEST` named it. Readers follow `LATEST`
only and `verify` the manifest, so a checkpoint whose files do not match
their sums is refused. Folders written by earlier versions (a temporary
folder renamed to `checkpoints/<name>`) have the same layout and read as
before.

Only one process writes (see `keras_pam.processes`): `keras_pam.run_folder`
calls `commit` on process 0 alone.

State trees (nested dicts and lists of numbers, strings, numpy arrays,
`AdapterState`s and numpy `Generator`s) are stored as a JSON skeleton plus
one `.npz` of arrays, with no pickling.
"""

import hashlib
import io
import json
import os

import numpy as np
import tensorflow as tf

from keras_pam.merging.lora import AdapterState

LATEST = "LATEST"
CHECKPOINTS = "checkpoints"
MANIFEST = "manifest.json"
TREE_JSON = "state.json"
TREE_ARRAYS = "arrays.npz"

gfile = tf.io.gfile


class CorruptCheckpointError(ValueError):
    """A checkpoint's files are missing or do not match their checksums."""


def is_local(path):
    """Whether `path` is on a local disk (no URL scheme, or `file://`)."""
    path = os.fspath(path)
    return "://" not in path or path.startswith("file://")


def local_path(path):
    """A local path without its `file://`."""
    path = os.fspath(path)
    return path[len("file://") :] if path.startswith("file://") else path


def exists(path):
    return gfile.exists(path)


def isdir(path):
    return gfile.isdir(path)


def makedirs(path):
    gfile.makedirs(path)


def listdir(path):
    """The names in folder `path` (an object store's `dir/` without `/`)."""
    return [entry.rstrip("/") for entry in gfile.listdir(path)]


def remove_tree(path):
    """Delete folder `path` and its contents if it exists; errors are
    ignored, as leftovers are deleted again at the next commit."""
    try:
        if gfile.exists(path):
            gfile.rmtree(path)
    except tf.errors.OpError:
        pass


def _remove_file(path):
    try:
        gfile.remove(path)
    except tf.errors.OpError:
        pass


def read_bytes(path):
    with gfile.GFile(path, "rb") as f:
        return f.read()


def write_bytes(path, data):
    """Write a file (not atomically: inside an uncommitted folder)."""
    with gfile.GFile(path, "wb") as f:
        f.write(data)


def copy_file(source, target):
    """Copy a file, e.g. from a local temporary folder into the run."""
    gfile.copy(source, target, overwrite=True)


def _fsync(path):
    """Flush a local file or folder to disk; a no-op elsewhere."""
    if not is_local(path):
        return
    try:
        fd = os.open(local_path(path) or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _encode(value, arrays):
    if isinstance(value, AdapterState):
        return {"__adapter__": _encode(dict(value.numpy()), arrays)}
    if isinstance(value, np.random.Generator):
        return {"__generator__": value.bit_generator.state}
    if isinstance(value, np.ndarray):
        key = f"a{len(arrays)}"
        if value.dtype == object:
            arrays[key] = np.asarray(value.tolist(), dtype=str)
            return {"__array__": key, "object": True, "size": len(value)}
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("State trees need str keys.")
        return {"__dict__": {k: _encode(v, arrays) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return [_encode(v, arrays) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"Cannot store a {type(value).__name__} in a checkpoint.")


def _decode(value, arrays):
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    if "__adapter__" in value:
        return AdapterState(_decode(value["__adapter__"], arrays))
    if "__generator__" in value:
        state = value["__generator__"]
        generator = np.random.Generator(
            getattr(np.random, state["bit_generator"])()
        )
        generator.bit_generator.state = state
        return generator
    if "__array__" in value:
        array = arrays[value["__array__"]]
        if value.get("object"):
            out = np.empty(value["size"], dtype=object)
            out[:] = [str(s) for s in array.reshape(-1)]
            return out
        return array
    return {k: _decode(v, arrays) for k, v in value["__dict__"].items()}


def save_tree(directory, tree):
    """Write a state tree as `state.json` + `arrays.npz` in `directory`."""
    arrays = {}
    skeleton = _encode(tree, arrays)
    write_bytes(os.path.join(directory, TREE_JSON), json.dumps(skeleton))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes(os.path.join(directory, TREE_ARRAYS), buffer.getvalue())


def load_tree(directory):
    """Read a state tree written by `save_tree`."""
    skeleton = json.loads(read_bytes(os.path.join(directory, TREE_JSON)))
    # Read whole: `np.load` seeks in ways a `GFile` does not.
    buffer = io.BytesIO(read_bytes(os.path.join(directory, TREE_ARRAYS)))
    with np.load(buffer) as data:
        arrays = {k: data[k] for k in data.files}
    return _decode(skeleton, arrays)


def _sha256(path):
    digest = hashlib.sha256()
    with gfile.GFile(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seal(directory):
    """Record the checksum of every file of `directory` in its manifest."""
    sums = {}
    for name in sorted(listdir(directory)):
        path = os.path.join(directory, name)
        if name != MANIFEST and not isdir(path):
            _fsync(path)
            sums[name] = _sha256(path)
    write_atomic(os.path.join(directory, MANIFEST), json.dumps(sums, indent=1))


def verify(directory):
    """Raise `CorruptCheckpointError` unless every file matches the
    manifest."""
    manifest = os.path.join(directory, MANIFEST)
    if not exists(manifest):
        raise CorruptCheckpointError(
            f"The checkpoint {directory!r} has no {MANIFEST}; it was not "
            "written completely."
        )
    try:
        sums = json.loads(read_bytes(manifest))
    except ValueError as error:
        raise CorruptCheckpointError(
            f"The manifest of checkpoint {directory!r} is unreadable: {error}"
        ) from None
    for name, expected in sums.items():
        path = os.path.join(directory, name)
        if not exists(path) or isdir(path):
            raise CorruptCheckpointError(
                f"The checkpoint {directory!r} is missing {name!r}."
            )
        if _sha256(path) != expected:
            raise CorruptCheckpointError(
                f"The file {name!r} of checkpoint {directory!r} does not match "
                "its checksum: it is corrupted. Delete the run folder's "
                f"{LATEST} file and this checkpoint to fall back to an "
                "earlier one, or start the run again."
            )


def write_atomic(path, text):
    """Write a text file so that readers see the old or the new content.

    The text goes to a temporary file renamed over `path`: atomic on a
    local disk, and a single object write on an object store.
    """
    temporary = f"{path}.tmp-{os.getpid()}"
    # One left by a killed write goes first (`ram://` appends to a file).
    _remove_file(temporary)
    write_bytes(temporary, text)
    _fsync(temporary)
    gfile.rename(temporary, path, overwrite=True)
    _fsync(os.path.dirname(path))


def _pointer(run_dir):
    """The folder name `LATEST` holds, or `None`."""
    pointer = os.path.join(run_dir, LATEST)
    if not exists(pointer):
        return None
    return read_bytes(pointer).decode().strip()


def commit(run_dir, name, write):
    """Write a checkpoint atomically and make it the latest.

    The steps, and why a kill at any instant leaves the previous or the new
    checkpoint on any file system, are in this module's docstring.

    Args:
        run_dir: str. The run folder (a local path or a `tf.io.gfile` URL).
        name: str. The checkpoint's name (e.g. `"task_0002"`).
        write: callable. `write(directory)` writes the files.

    Returns:
        The checkpoint's folder.
    """
    root = os.path.join(run_dir, CHECKPOINTS)
    makedirs(root)
    # Never the folder `LATEST` names: that one stays whole until the end.
    entry = name if _pointer(run_dir) != name else f"again-{name}"
    folder = os.path.join(root, entry)
    # A folder that `LATEST` does not name is a leftover of a killed run.
    remove_tree(folder)
    makedirs(folder)
    write(folder)
    seal(folder)
    _fsync(root)
    write_atomic(os.path.join(run_dir, LATEST), entry)  # The commit point.
    for other in listdir(root):
        if other != entry:
            remove_tree(os.path.join(root, other))
    for other in listdir(run_dir):  # Of a `write_atomic` killed before.
        if other.startswith(f"{LATEST}.tmp-"):
            _remove_file(os.path.join(run_dir, other))
    return folder


def latest(run_dir):
    """The latest committed checkpoint folder of a run, or `None`."""
    name = _pointer(run_dir)
    if name is None:
        return None
    directory = os.path.join(run_dir, CHECKPOINTS, name)
    if not isdir(directory):
        raise CorruptCheckpointError(
            f"{os.path.join(run_dir, LATEST)} names the checkpoint {name!r}, "
            "which does not exist."
        )
    return directory
