"""Test doubles shipped with jouled: faithful fakes of the hardware interfaces it reads.

Users need them too (to try jouled on a VM, or to test their own dashboards), so they live
in the package rather than under tests/.
"""
