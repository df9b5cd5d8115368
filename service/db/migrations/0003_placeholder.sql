-- local placeholder (not committed): another wave-2 branch owns 0003
SELECT 1;
