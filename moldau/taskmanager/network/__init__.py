"""The data plane between subtasks: result partitions (the producing side, one
subpartition per consuming subtask), input gates (the consuming side, one input channel
per producing subtask) and the credit-based flow control between them.

Local channels (both subtasks in one slot process) hand buffers over in memory; remote
channels carry them over TCP, one connection per channel, opened by the consumer.
"""
