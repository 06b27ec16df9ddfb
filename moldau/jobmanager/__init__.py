"""The JobManager daemon: accepts job graphs, schedules subtasks onto TaskManager slots,
tracks execution states and serves them to the REST API through `JobManagerGateway`."""
