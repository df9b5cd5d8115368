-- local placeholder (not committed): another wave-2 branch owns 0005
SELECT 1;
