"""doorlock's desktop converter: rebuilds dlib's face ResNet in Keras, trains and
evaluates BioMetricNet, quantizes to TFLite and writes model bundles."""
