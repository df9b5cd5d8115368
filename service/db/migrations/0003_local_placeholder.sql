-- local placeholder (never committed): 0003 belongs to another branch
SELECT 1;
