"""Edge and datacenter SUTs: LoadGen workloads, the director/client power workflow, configs."""
