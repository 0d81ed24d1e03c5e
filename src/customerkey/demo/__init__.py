"""The guided demo: Microsoft's Customer Key story for Contoso, played through the cmdlet
shell with every step checking its documented effect (``guided.play``; ``customerkey demo``)."""
