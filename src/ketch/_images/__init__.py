"""Root-filesystem images: the Dockerfile language, build contexts and the layered builder."""
