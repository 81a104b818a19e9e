"""Frames for training and evaluation: users' image folders and videos, and the real images and
videos that ship offline inside registry packages."""
