"""The TaskManager daemon: offers task slots to the JobManager and runs the subtasks
deployed to them, one OS process per slot, exchanging records over the network."""
