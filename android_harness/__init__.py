"""Android devices over ADB: transports, device facts, file sync, on-device benchmark runs,
power sampling and result records; plus a loopback ADB device for tests and dry runs."""
