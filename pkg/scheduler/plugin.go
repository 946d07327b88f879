package scheduler

// Name is the plugin's name in a KubeSchedulerConfiguration.
const Name = "TesseraGPU"
