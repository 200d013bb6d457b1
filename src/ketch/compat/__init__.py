"""Running scripts written for Modal on ketch."""
