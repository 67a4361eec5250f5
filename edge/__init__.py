"""doorlock on the device: camera -> detect -> align -> embed -> match -> lock.

Nothing in this package imports TensorFlow or the desktop converter.
"""

__version__ = "0.1.0"
