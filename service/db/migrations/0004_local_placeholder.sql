-- local placeholder (never committed): 0004 belongs to another branch
SELECT 1;
