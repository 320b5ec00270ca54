"""What runs in the processes a container is made of: the setup child and the container's init."""
